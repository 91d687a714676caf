//! fleetctl's security commands: `tokens create|list|revoke`, `agents list|revoke`, `audit`.

use chrono::{DateTime, SecondsFormat, Utc};
use metalfleet_common::exit;
use serde_json::{Value, json};

use crate::CliError;
use crate::client::{AgentCert, AuditEntry, FleetClient, TokenInfo};
use crate::output::{Output, Table, Text};

fn time(at: Option<DateTime<Utc>>) -> Value {
    at.map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Secs, true))).unwrap_or(Value::Null)
}

fn time_text(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_else(|| "-".into())
}

fn text(table: Table) -> Text {
    let mut text = Text::new();
    text.table(table);
    text
}

pub fn token_json(token: &TokenInfo) -> Value {
    json!({
        "id": token.id,
        "machine": token.machine,
        "uses_left": token.uses_left,
        "expires_at": time(token.expires_at),
        "created_at": time(token.created_at),
        "created_by": token.created_by,
        "revoked": token.revoked,
    })
}

pub fn tokens_table(tokens: &[TokenInfo]) -> Text {
    let mut t = Table::new(&["ID", "MACHINE", "USES LEFT", "EXPIRES", "CREATED BY", "REVOKED"]);
    for token in tokens {
        t.row([
            token.id.clone(),
            token.machine.clone().unwrap_or_else(|| "any".into()),
            token.uses_left.to_string(),
            time_text(token.expires_at),
            token.created_by.clone(),
            if token.revoked { "yes".into() } else { "no".into() },
        ]);
    }
    text(t)
}

pub fn agent_json(cert: &AgentCert) -> Value {
    json!({
        "machine_id": cert.machine_id,
        "hostname": cert.hostname,
        "serial": cert.serial,
        "issued_at": time(cert.issued_at),
        "expires_at": time(cert.expires_at),
        "revoked": cert.revoked,
    })
}

pub fn agents_table(certs: &[AgentCert]) -> Text {
    let mut t = Table::new(&["MACHINE", "MACHINE ID", "SERIAL", "EXPIRES", "REVOKED"]);
    for cert in certs {
        t.row([
            if cert.hostname.is_empty() { "-".into() } else { cert.hostname.clone() },
            cert.machine_id.clone(),
            cert.serial.clone(),
            time_text(cert.expires_at),
            if cert.revoked { "yes".into() } else { "no".into() },
        ]);
    }
    text(t)
}

pub fn audit_json(entry: &AuditEntry) -> Value {
    let args: Value = serde_json::from_str(&entry.args).unwrap_or(Value::String(entry.args.clone()));
    json!({
        "id": entry.id,
        "at": time(entry.at),
        "operator": entry.operator,
        "role": entry.role,
        "action": entry.action,
        "args": args,
        "result": entry.result,
    })
}

pub fn audit_table(entries: &[AuditEntry]) -> Text {
    let mut t = Table::new(&["AT", "OPERATOR", "ROLE", "ACTION", "ARGS", "RESULT"]).wide(&["ARGS", "RESULT"]);
    for e in entries {
        t.row([
            time_text(e.at),
            e.operator.clone(),
            e.role.clone(),
            e.action.clone(),
            e.args.clone(),
            e.result.clone(),
        ]);
    }
    text(t)
}

/// `tokens create`: the secret goes to stdout (alone in text mode, so `$(fleetctl tokens create)` works).
///
/// # Errors
/// The call failed.
pub async fn tokens_create(
    client: &FleetClient,
    out: &mut Output,
    ttl: Option<std::time::Duration>,
    machine: Option<&str>,
    uses: u32,
) -> Result<i32, CliError> {
    let (info, secret) = client.create_token(ttl.map_or(0, |d| d.as_secs().max(1)), machine, uses).await?;
    if out.is_json() {
        let mut value = token_json(&info);
        // The one place a secret is printed: the operator asked for it, and it is shown once.
        value["token"] = Value::String(secret.expose().to_string());
        out.json(&value)?;
    } else {
        crate::output::note(format!(
            "token {} for {} ({} use(s), expires {}); it is shown only once:",
            info.id,
            info.machine.as_deref().unwrap_or("any machine"),
            info.uses_left,
            time_text(info.expires_at)
        ));
        out.line(secret.expose())?;
    }
    Ok(exit::OK)
}

/// # Errors
/// The call failed.
pub async fn tokens_list(client: &FleetClient, out: &mut Output) -> Result<i32, CliError> {
    let tokens = client.list_tokens().await?;
    if out.is_json() {
        out.json(&json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() }))?;
    } else {
        out.text(&tokens_table(&tokens))?;
    }
    Ok(exit::OK)
}

/// # Errors
/// The call failed.
pub async fn tokens_revoke(client: &FleetClient, out: &mut Output, id: &str) -> Result<i32, CliError> {
    client.revoke_token(id).await?;
    if out.is_json() {
        out.json(&json!({ "id": id, "revoked": true }))?;
    } else {
        out.line(format!("revoked {id}"))?;
    }
    Ok(exit::OK)
}

/// # Errors
/// The call failed.
pub async fn agents_list(client: &FleetClient, out: &mut Output) -> Result<i32, CliError> {
    let certs = client.list_agents().await?;
    if out.is_json() {
        out.json(&json!({ "agents": certs.iter().map(agent_json).collect::<Vec<_>>() }))?;
    } else {
        out.text(&agents_table(&certs))?;
    }
    Ok(exit::OK)
}

/// # Errors
/// The call failed.
pub async fn agents_revoke(client: &FleetClient, out: &mut Output, name: &str) -> Result<i32, CliError> {
    let (machine_id, count) = client.revoke_agent(name).await?;
    if out.is_json() {
        out.json(&json!({ "machine_id": machine_id, "certificates_revoked": count }))?;
    } else {
        out.line(format!("revoked {count} certificate(s) of {name} ({machine_id})"))?;
    }
    Ok(exit::OK)
}

/// # Errors
/// The call failed.
pub async fn audit(client: &FleetClient, out: &mut Output, limit: u32) -> Result<i32, CliError> {
    let entries = client.audit(limit).await?;
    if out.is_json() {
        out.json(&json!({ "entries": entries.iter().map(audit_json).collect::<Vec<_>>() }))?;
    } else {
        out.text(&audit_table(&entries))?;
    }
    Ok(exit::OK)
}

/// The exit code for a printed result.
pub const OK: i32 = exit::OK;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_args_are_shown_as_json_and_tables_have_headers() {
        let entry = AuditEntry {
            id: 1,
            at: None,
            operator: "ro".into(),
            role: "read-only".into(),
            action: "CreateToken".into(),
            args: "{\"uses\":1}".into(),
            result: "permission_denied".into(),
        };
        assert_eq!(audit_json(&entry)["args"]["uses"], 1);
        assert!(audit_table(std::slice::from_ref(&entry)).render().contains("permission_denied"));
        assert!(tokens_table(&[]).render().contains("USES LEFT"));
    }
}
