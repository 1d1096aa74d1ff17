//! The conversation so far: the system message and the turns, how the oldest turns make
//! room when the context fills, and the JSON file `/save` writes and `/load` reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use ternlm::Message;

use super::options::SavedOptions;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    /// The turns, without the system message.
    pub messages: Vec<Message>,
}

/// The file `/save` writes: the conversation with the options it was held under.
#[derive(Serialize, Deserialize)]
struct Saved {
    /// Which model held the conversation; informative only, any model can continue it.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    options: SavedOptions,
    messages: Vec<Message>,
}

const ROLES: [&str; 3] = ["user", "assistant", "system"];

impl Conversation {
    /// What the template renders: the system message, then the turns.
    pub fn prompt_messages(&self) -> Vec<Message> {
        self.system.iter().map(|s| Message::new("system", s.clone())).chain(self.messages.iter().cloned()).collect()
    }

    /// Forgets the oldest turn (a message and the replies to it, so that the conversation
    /// still starts with a user's message, as templates that insist on alternation require),
    /// never the last message. Returns whether there was one to forget.
    pub fn drop_oldest_turn(&mut self) -> bool {
        if self.messages.len() < 2 {
            return false;
        }
        self.messages.remove(0);
        while self.messages.len() > 1 && self.messages[0].role != "user" {
            self.messages.remove(0);
        }
        true
    }

    pub fn save(&self, path: &Path, model: &str, options: SavedOptions) -> Result<()> {
        let saved = Saved { model: Some(model.to_string()), system: self.system.clone(), options, messages: self.messages.clone() };
        let json = serde_json::to_string_pretty(&saved).context("encoding the conversation")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// A conversation saved by [`save`](Self::save), with its options.
    pub fn load(path: &Path) -> Result<(Self, SavedOptions)> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let saved: Saved = serde_json::from_str(&text).with_context(|| format!("{} is not a saved conversation", path.display()))?;
        if let Some((i, m)) = saved.messages.iter().enumerate().find(|(_, m)| !ROLES.contains(&m.role.as_str())) {
            anyhow::bail!("{}: message {} has role {:?}; roles are user, assistant and system", path.display(), i + 1, m.role);
        }
        Ok((Self { system: saved.system.filter(|s| !s.is_empty()), messages: saved.messages }, saved.options))
    }
}

/// A file name as typed: `~/` stands for the home directory, as in a shell.
pub fn user_path(typed: &str) -> PathBuf {
    match (typed.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(typed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(roles: &[&str]) -> Conversation {
        Conversation { system: Some("sys".into()), messages: roles.iter().enumerate().map(|(i, r)| Message::new(*r, i.to_string())).collect() }
    }

    fn contents(c: &Conversation) -> Vec<&str> {
        c.messages.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn dropping_keeps_the_system_message_and_the_last_message() {
        let mut c = conv(&["user", "assistant", "user", "assistant", "user"]);
        assert!(c.drop_oldest_turn());
        assert_eq!(contents(&c), ["2", "3", "4"]);
        assert!(c.drop_oldest_turn());
        assert_eq!(contents(&c), ["4"]);
        assert!(!c.drop_oldest_turn());
        assert_eq!(c.prompt_messages()[0], Message::new("system", "sys"));
    }

    #[test]
    fn dropping_skips_to_a_users_message() {
        let mut c = conv(&["user", "assistant", "assistant", "user"]);
        assert!(c.drop_oldest_turn());
        assert_eq!(contents(&c), ["3"]);
    }

    #[test]
    fn save_and_load_round_trip() {
        let path = std::env::temp_dir().join(format!("ternlm-chat-{}.json", std::process::id()));
        let c = conv(&["user", "assistant"]);
        c.save(&path, "m", SavedOptions { top_k: Some(3), ..Default::default() }).unwrap();
        let (back, opts) = Conversation::load(&path).unwrap();
        assert_eq!((back, opts.top_k), (c, Some(3)));
        std::fs::write(&path, r#"{"messages": [{"role": "robot", "content": "x"}]}"#).unwrap();
        assert!(Conversation::load(&path).unwrap_err().to_string().contains("robot"));
        std::fs::write(&path, "not json").unwrap();
        assert!(format!("{:#}", Conversation::load(&path).unwrap_err()).contains("not a saved conversation"));
        let _ = std::fs::remove_file(&path);
    }
}
