//! `portguard open`: the client side of a grant. Sends a token to an agent's auth endpoint and
//! prints what opened, for which address, until when.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// What `open` asks for.
pub struct OpenRequest<'a> {
    pub url: &'a str,
    pub token_file: &'a Path,
    pub ports: &'a [String],
    pub ttl: Option<&'a str>,
    /// A PEM file of extra CA certificates to trust (a self-signed auth endpoint).
    pub ca: Option<&'a Path>,
}

pub fn open(request: &OpenRequest) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(send(request))
}

async fn send(request: &OpenRequest<'_>) -> anyhow::Result<ExitCode> {
    let token = std::fs::read_to_string(request.token_file)
        .with_context(|| format!("read token file {}", request.token_file.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("token file {} is empty", request.token_file.display());
    }

    let mut client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .https_only(true);
    if let Some(ca) = request.ca {
        let pem = std::fs::read(ca).with_context(|| format!("read CA file {}", ca.display()))?;
        for certificate in
            reqwest::Certificate::from_pem_bundle(&pem).context("parse the CA file")?
        {
            client = client.add_root_certificate(certificate);
        }
    }
    let client = client.build().context("set up the HTTPS client")?;

    let mut body = json!({});
    if !request.ports.is_empty() {
        body["ports"] = json!(request.ports);
    }
    if let Some(ttl) = request.ttl {
        body["ttl"] = json!(ttl);
    }
    let url = grants_url(request.url);
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("send the grant request to {url}"))?;

    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let why = answer["error_description"]
            .as_str()
            .or(answer["error"].as_str())
            .unwrap_or("no details");
        eprintln!("portguard: {url} refused the grant: {status}: {why}");
        return Ok(ExitCode::FAILURE);
    }

    let ports: Vec<&str> = answer["ports"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "grant {} opens {} for {} until {} ({} s){}",
        answer["id"].as_str().unwrap_or("?"),
        ports.join(", "),
        answer["source"].as_str().unwrap_or("?"),
        answer["expires_at"].as_str().unwrap_or("?"),
        answer["ttl_seconds"],
        if answer["extended"] == Value::Bool(true) {
            " (extended an existing grant)"
        } else {
            ""
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// The grants resource of an agent: the URL itself if it names a path, else `/v1/grants`.
fn grants_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let has_path = trimmed.splitn(4, '/').nth(3).is_some_and(|p| !p.is_empty());
    if has_path {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/grants")
    }
}

#[cfg(test)]
mod tests {
    use super::grants_url;

    #[test]
    fn a_bare_agent_url_gets_the_grants_path() {
        assert_eq!(
            grants_url("https://host:8443"),
            "https://host:8443/v1/grants"
        );
        assert_eq!(
            grants_url("https://host:8443/"),
            "https://host:8443/v1/grants"
        );
        assert_eq!(
            grants_url("https://host:8443/v1/grants"),
            "https://host:8443/v1/grants"
        );
    }
}
