//! The cloud-init user data of a deploy: `deploy/cloud-init/user-data.yaml.tmpl` with this deploy's values.
//!
//! The template uses `{{NAME}}` placeholders. Values are checked before they are put in (no quotes, backslashes
//! or line breaks), so a hostname cannot break out of its YAML scalar. The token is the only secret in the
//! result; the CA is public.

/// The built-in template, compiled into the coordinator.
pub const TEMPLATE: &str = include_str!("../../../deploy/cloud-init/user-data.yaml.tmpl");

/// What one deploy's user data says.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    /// The agents' gRPC address, `https://HOST:PORT`.
    pub coordinator_url: &'a str,
    /// The artifacts listener, `https://HOST:PORT` (the agent is at `/agent`).
    pub artifacts_url: &'a str,
    /// Hex SHA-256 of the agent binary served there.
    pub agent_sha256: &'a str,
    /// The coordinator's CA certificate (PEM).
    pub ca_pem: &'a str,
    /// The one-time enrollment token.
    pub token: &'a str,
    pub hostname: &'a str,
}

/// Why the user data could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the {name} value {value:?} holds a quote, backslash or line break; fix [operations] or the MAAS hostname")]
    Unsafe { name: &'static str, value: String },
    #[error("the user-data template has no {0} placeholder; the agent would not get it (see deploy/cloud-init/)")]
    Missing(&'static str),
}

/// Renders `template` (the built-in [`TEMPLATE`] unless the operator gave one).
///
/// # Errors
/// [`RenderError`] when a value is unsafe to embed or the template lacks the token or coordinator placeholder.
pub fn render(template: &str, values: &Values<'_>) -> Result<String, RenderError> {
    let scalars = [
        ("COORDINATOR_URL", values.coordinator_url),
        ("ARTIFACTS_URL", values.artifacts_url),
        ("AGENT_SHA256", values.agent_sha256),
        ("TOKEN", values.token),
        ("HOSTNAME", values.hostname),
    ];
    for (name, value) in scalars {
        if value.chars().any(|c| matches!(c, '"' | '\'' | '\\' | '\n' | '\r') || c.is_control()) {
            return Err(RenderError::Unsafe {
                name,
                value: if name == "TOKEN" { "<redacted>".into() } else { value.into() },
            });
        }
    }
    for required in ["{{TOKEN}}", "{{COORDINATOR_URL}}"] {
        if !template.contains(required) {
            return Err(RenderError::Missing(required));
        }
    }
    let ca_indented: String =
        values.ca_pem.trim().lines().map(|line| format!("      {}\n", line.trim_end())).collect::<String>();
    let mut text = template.replace("{{CA_PEM_INDENTED}}\n", &ca_indented);
    for (name, value) in scalars {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::{Yaml, YamlLoader};

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\nline2==\n-----END CERTIFICATE-----\n";

    fn values<'a>(hostname: &'a str, token: &'a str) -> Values<'a> {
        Values {
            coordinator_url: "https://172.16.0.3:7443",
            artifacts_url: "https://172.16.0.3:7444",
            agent_sha256: "ab12",
            ca_pem: CA,
            token,
            hostname,
        }
    }

    fn file<'a>(doc: &'a Yaml, path: &str) -> &'a Yaml {
        doc["write_files"].as_vec().unwrap().iter().find(|f| f["path"].as_str() == Some(path)).unwrap()
    }

    #[test]
    fn renders_valid_cloud_config_with_token_url_and_ca() {
        let token = "mf1.0a0b0c.deadbeef";
        let text = render(TEMPLATE, &values("server1", token)).unwrap();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(!text.contains("{{"), "a placeholder is left: {text}");
        let docs = YamlLoader::load_from_str(&text).unwrap();
        let doc = &docs[0];
        let token_file = file(doc, "/etc/metalfleet/token");
        assert_eq!(token_file["content"].as_str().unwrap().trim(), token);
        assert_eq!(token_file["permissions"].as_str(), Some("0600"));
        assert_eq!(file(doc, "/etc/metalfleet/ca.pem")["content"].as_str().unwrap(), CA);
        let config = file(doc, "/etc/metalfleet/agent.toml")["content"].as_str().unwrap();
        let config: toml::Table = toml::from_str(config).unwrap();
        assert_eq!(config["coordinator"].as_str(), Some("https://172.16.0.3:7443"));
        assert_eq!(config["hostname"].as_str(), Some("server1"));
        assert_eq!(config["token_file"].as_str(), Some("/etc/metalfleet/token"));
        let runcmd = format!("{:?}", doc["runcmd"]);
        assert!(runcmd.contains("https://172.16.0.3:7444/agent") && runcmd.contains("ab12"), "{runcmd}");
        assert!(runcmd.contains("sha256sum -c"), "{runcmd}");
        // The token appears exactly once: nowhere but its 0600 file.
        assert_eq!(text.matches(token).count(), 1);
    }

    #[test]
    fn leaks_no_other_secret() {
        let text = render(TEMPLATE, &values("server1", "mf1.aa.bb")).unwrap();
        for secret in ["PRIVATE KEY", "api_key", "consumer", "admin"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn refuses_values_that_would_break_out() {
        for hostname in ["a\"b", "a\nb", "a'b", "a\\b"] {
            let err = render(TEMPLATE, &values(hostname, "mf1.aa.bb")).unwrap_err();
            assert!(matches!(err, RenderError::Unsafe { name: "HOSTNAME", .. }), "{err}");
        }
        let err = render(TEMPLATE, &values("h", "mf1\n")).unwrap_err();
        assert!(!err.to_string().contains("mf1"), "the token is not echoed: {err}");
        assert!(matches!(render("#cloud-config\n", &values("h", "t")), Err(RenderError::Missing(_))));
    }
}
