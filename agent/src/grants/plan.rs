//! What a valid token opens: the gates whose scope it carries (and whose issuer list admits
//! its issuer), limited to the ports asked for, for the shortest of the token's lifetime, the
//! gates' `max_ttl` and the lifetime asked for.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use super::{Grant, GrantPort, MAX_PORTS_PER_GRANT, new_id, unix_ms};
use crate::{
    policy::{Gate, Protocol},
    tokens::AccessToken,
};

/// What the client asked for; empty `ports` means every port its token opens.
#[derive(Clone, Debug, Default)]
pub struct Requested {
    pub ports: Vec<(u16, Protocol)>,
    pub ttl: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The token is valid but opens none of the asked ports.
    #[error("the token's scopes open none of the requested ports ({0})")]
    InsufficientScope(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the token expires before a grant could start")]
    ExpiresNow,
}

/// The grant a token earns, not yet recorded.
pub fn plan(
    gates: &[Gate],
    token: &AccessToken,
    source: IpAddr,
    requested: &Requested,
    now: SystemTime,
) -> Result<Grant, PlanError> {
    if requested.ttl == Some(Duration::ZERO) {
        return Err(PlanError::BadRequest("ttl must be more than zero".into()));
    }
    let opens = |gate: &&Gate| {
        token.scopes.contains(&gate.scope)
            && (gate.issuers.is_empty() || gate.issuers.contains(&token.issuer_name))
    };
    let usable: Vec<&Gate> = gates.iter().filter(opens).collect();

    let mut ports = Vec::new();
    let mut refused = Vec::new();
    if requested.ports.is_empty() {
        for gate in &usable {
            for port in gate.ports.first..=gate.ports.last {
                ports.push(port_of(gate, port));
            }
        }
    } else {
        for &(port, protocol) in &requested.ports {
            let covering = |g: &&&Gate| g.protocol == protocol && g.ports.contains(port);
            match usable.iter().find(covering) {
                Some(gate) => ports.push(port_of(gate, port)),
                None => refused.push(format!("{port}/{}", protocol.as_str())),
            }
        }
    }
    if ports.is_empty() {
        let what = if refused.is_empty() {
            "no gate takes its scopes".to_owned()
        } else {
            refused.join(", ")
        };
        return Err(PlanError::InsufficientScope(what));
    }
    if ports.len() > MAX_PORTS_PER_GRANT {
        return Err(PlanError::BadRequest(format!(
            "the grant would open {} ports; ask for at most {MAX_PORTS_PER_GRANT}",
            ports.len()
        )));
    }
    ports.sort_by(|a, b| (a.port, &a.protocol).cmp(&(b.port, &b.protocol)));
    ports.dedup();

    // The shortest of the token's expiry, each opened gate's max_ttl, and the asked ttl.
    let mut expires = token.expires_at;
    for gate in usable
        .iter()
        .filter(|g| ports.iter().any(|p| p.gate == g.name))
    {
        if let Some(max_ttl) = gate.max_ttl {
            expires = expires.min(now + max_ttl);
        }
    }
    if let Some(ttl) = requested.ttl {
        expires = expires.min(now + ttl);
    }
    if expires <= now {
        return Err(PlanError::ExpiresNow);
    }

    Ok(Grant {
        id: new_id(),
        source,
        ports,
        issuer: token.issuer_name.clone(),
        subject: token.subject.clone(),
        client_id: token.client_id.clone(),
        scopes: token.scopes.clone(),
        jti: token.jti.clone(),
        token_hash: token.token_hash.clone(),
        created_unix_ms: unix_ms(now),
        expires_unix_ms: unix_ms(expires),
    })
}

fn port_of(gate: &Gate, port: u16) -> GrantPort {
    GrantPort {
        port,
        protocol: gate.protocol.as_str().to_owned(),
        gate: gate.name.clone(),
    }
}
