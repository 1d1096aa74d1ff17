//! Slash commands: what a line starting with `/` asks for. As in Ollama, every such line is
//! a command and never reaches the model, so a mistyped command cannot leak into the
//! conversation; text that starts with `/` can still be sent inside `"""`.

use super::options::Param;

/// What a command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Help,
    Bye,
    Clear,
    /// A new system message; `None` removes it.
    SetSystem(Option<String>),
    Set(Param, String),
    SetVerbose(bool),
    Show(Show),
    Save(String),
    Load(String),
}

/// What `/show` shows.
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum Show {
    Summary,
    Info,
    Template,
    System,
    Parameters,
}

/// Why a command line was not understood: the message to print.
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// No such command (help follows the message).
    Unknown(String),
    /// A known command used wrongly.
    Usage(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(word) => write!(f, "unknown command {word}; type /? for help"),
            Self::Usage(msg) => f.write_str(msg),
        }
    }
}

pub const HELP: &str = "\
Commands (a line that starts with / is never sent to the model):
  /set system TEXT       set the system message (/set system alone removes it)
  /set NAME VALUE        set an option: temperature, top_k, top_p, min_p,
                         repeat_penalty, seed, num_predict (also /set parameter NAME VALUE)
  /set verbose | quiet   show timings after each reply, or stop
  /show [info|template|system|parameters]
                         the model, its chat template, the system message, the options
  /clear                 start the conversation over (also /reset)
  /save FILE             save the conversation, system message and options as JSON
  /load FILE             continue a conversation saved with /save
  /bye                   leave (also /exit, /quit, Ctrl-D)
  /?, /help              this help

\"\"\" starts a message of several lines, ended by a line that ends with \"\"\"; text
inside is sent as it is, even when it starts with /. Ctrl-C stops a reply.";

/// Parses a line that starts with `/` (already trimmed; it may span lines when it came from
/// a `/set system \"\"\"` block).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let (word, rest) = split_word(line);
    let usage = |msg: &str| Err(ParseError::Usage(msg.to_string()));
    match word {
        "/?" | "/help" => Ok(Command::Help),
        "/bye" | "/exit" | "/quit" => Ok(Command::Bye),
        "/clear" | "/reset" => Ok(Command::Clear),
        "/show" => match rest {
            "" => Ok(Command::Show(Show::Summary)),
            "info" => Ok(Command::Show(Show::Info)),
            "template" => Ok(Command::Show(Show::Template)),
            "system" => Ok(Command::Show(Show::System)),
            "parameters" | "options" => Ok(Command::Show(Show::Parameters)),
            _ => usage("usage: /show [info|template|system|parameters]"),
        },
        "/save" if rest.is_empty() => usage("usage: /save FILE"),
        "/save" => Ok(Command::Save(rest.to_string())),
        "/load" if rest.is_empty() => usage("usage: /load FILE"),
        "/load" => Ok(Command::Load(rest.to_string())),
        "/set" => parse_set(rest),
        _ => Err(ParseError::Unknown(word.to_string())),
    }
}

fn parse_set(args: &str) -> Result<Command, ParseError> {
    let (what, rest) = split_word(args);
    match what {
        "" => Err(ParseError::Usage("usage: /set system TEXT, /set NAME VALUE or /set verbose|quiet".into())),
        "system" => Ok(Command::SetSystem((!rest.is_empty()).then(|| rest.to_string()))),
        "verbose" | "quiet" if rest.is_empty() => Ok(Command::SetVerbose(what == "verbose")),
        "parameter" => parse_option(rest),
        _ => parse_option(args),
    }
}

fn parse_option(args: &str) -> Result<Command, ParseError> {
    let (name, value) = split_word(args);
    let Some(param) = Param::from_name(name) else {
        let names = Param::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
        return Err(ParseError::Usage(format!("unknown option {name:?}; the options are {names}")));
    };
    if value.is_empty() || value.split_whitespace().count() > 1 {
        return Err(ParseError::Usage(format!("usage: /set {} VALUE", param.name())));
    }
    Ok(Command::Set(param, value.to_string()))
}

/// The first word of `s` and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(at) => (&s[..at], s[at..].trim()),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_and_their_aliases() {
        for (line, want) in
            [("/?", Command::Help), ("/help", Command::Help), ("/bye", Command::Bye), ("/exit", Command::Bye), ("/quit", Command::Bye), ("/clear", Command::Clear), ("/reset", Command::Clear)]
        {
            assert_eq!(parse(line), Ok(want), "{line}");
        }
        assert_eq!(parse("/show"), Ok(Command::Show(Show::Summary)));
        assert_eq!(parse("/show  parameters"), Ok(Command::Show(Show::Parameters)));
        assert!(matches!(parse("/show license"), Err(ParseError::Usage(_))));
    }

    #[test]
    fn set_takes_ollama_names_and_flag_spellings() {
        for line in ["/set top_k 5", "/set top-k 5", "/set --top-k 5", "/set parameter top_k 5", "/set TOP_K 5"] {
            assert_eq!(parse(line), Ok(Command::Set(Param::TopK, "5".into())), "{line}");
        }
        assert_eq!(parse("/set num_predict -1"), Ok(Command::Set(Param::NumPredict, "-1".into())));
        assert_eq!(parse("/set max-tokens 9"), Ok(Command::Set(Param::NumPredict, "9".into())));
        assert_eq!(parse("/set verbose"), Ok(Command::SetVerbose(true)));
        assert_eq!(parse("/set quiet"), Ok(Command::SetVerbose(false)));
        assert!(matches!(parse("/set temperature"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("/set temperature 1 2"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("/set warmth 1"), Err(ParseError::Usage(m)) if m.contains("temperature")));
        assert!(matches!(parse("/set"), Err(ParseError::Usage(_))));
    }

    #[test]
    fn set_system_keeps_the_whole_text() {
        assert_eq!(parse("/set system You are  terse.\nVery."), Ok(Command::SetSystem(Some("You are  terse.\nVery.".into()))));
        assert_eq!(parse("/set system \nline\n"), Ok(Command::SetSystem(Some("line".into()))));
        assert_eq!(parse("/set system"), Ok(Command::SetSystem(None)));
    }

    #[test]
    fn files_are_the_rest_of_the_line() {
        assert_eq!(parse("/save my chat.json"), Ok(Command::Save("my chat.json".into())));
        assert_eq!(parse("/load c.json"), Ok(Command::Load("c.json".into())));
        assert!(matches!(parse("/save"), Err(ParseError::Usage(_))));
    }

    #[test]
    fn anything_else_is_an_unknown_command() {
        assert_eq!(parse("/usr/bin"), Err(ParseError::Unknown("/usr/bin".into())));
        assert_eq!(parse("/"), Err(ParseError::Unknown("/".into())));
        assert_eq!(parse("/foo bar").unwrap_err().to_string(), "unknown command /foo; type /? for help");
    }
}
