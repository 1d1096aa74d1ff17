//! The HTTP client: ureq with the platform's certificate verifier (system roots, so proxies
//! with a locally installed CA work), proxy settings from the environment, and generous
//! timeouts for large files; the `Authorization` header follows redirects only within a host.

use std::time::Duration;

use ureq::Agent;
use ureq::tls::{RootCerts, TlsConfig};

pub(crate) fn agent() -> Agent {
    Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(RootCerts::PlatformVerifier).build())
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .http_status_as_error(true)
        // The hub redirects gated small files within its own host (which still wants the
        // token) and large ones to a CDN on another host (which must not get it).
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .user_agent(concat!("ternlm/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}
