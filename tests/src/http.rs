//! A small HTTP/1.1 client for the tests: one request per connection (`Connection: close`) over
//! a stream the caller opened in the right namespace, plain (the OpenID provider) or TLS (the
//! agent's auth endpoint). Enough for JSON APIs: `Content-Length` and chunked bodies.

use std::{
    io::{ErrorKind, Read, Write},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// How long a test waits for any one read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a response may hold; more is a bug in the test or the server.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A request to send; `host` fills the `Host` header.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, host: &'a str, path: &'a str) -> Self {
        Self {
            method,
            host,
            path,
            headers: Vec::new(),
            body: &[],
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.headers.push(("Content-Type", content_type.to_owned()));
        self.body = body;
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.host,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body);
        bytes
    }
}

/// A response: status, headers (names lowercased) and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("read a JSON body from {}: {}", self.status, self.text()))
    }
}

/// Sends `request` on `stream` and reads the response.
pub fn exchange(stream: &mut (impl Read + Write), request: &Request) -> anyhow::Result<Response> {
    stream
        .write_all(&request.encode())
        .with_context(|| format!("send {} {}", request.method, request.path))?;
    stream.flush().context("send the request")?;

    let mut received = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            break end;
        }
        if read_more(stream, &mut received)? == 0 {
            bail!(
                "the connection closed before the response's headers: {:?}",
                String::from_utf8_lossy(&received)
            );
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("read the status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: received[head_end + 4..].to_vec(),
    };

    if request.method == "HEAD" || matches!(status, 204 | 304) {
        response.body.clear();
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().context("read Content-Length")?;
        while response.body.len() < length {
            if read_more(stream, &mut response.body)? == 0 {
                bail!(
                    "the body ended after {} of {length} bytes",
                    response.body.len()
                );
            }
        }
        response.body.truncate(length);
    } else if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        while find(&response.body, b"0\r\n\r\n").is_none() {
            if read_more(stream, &mut response.body)? == 0 {
                break;
            }
        }
        response.body = dechunk(&response.body)?;
    } else {
        while read_more(stream, &mut response.body)? > 0 {}
    }
    Ok(response)
}

/// Reads what is available into `into`; 0 at the end of the stream. A TLS peer that closes
/// without `close_notify` ends the stream too.
fn read_more(stream: &mut impl Read, into: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut buffer = [0u8; 8192];
    let read = match stream.read(&mut buffer) {
        Ok(read) => read,
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => 0,
        Err(error) => return Err(error).context("read the response"),
    };
    into.extend_from_slice(&buffer[..read]);
    if into.len() > MAX_RESPONSE_BYTES {
        bail!("the response exceeds {MAX_RESPONSE_BYTES} bytes");
    }
    Ok(read)
}

fn dechunk(mut bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n").context("a chunk size line")?;
        let size = String::from_utf8_lossy(&bytes[..line_end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("read the chunk size {size:?}"))?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if bytes.len() < size + 2 {
            bail!("a chunk of {size} bytes is cut short");
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `application/x-www-form-urlencoded` for the pairs given.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        let body = dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").expect("valid chunks");
        assert_eq!(body, b"Wikipedia");
    }

    #[test]
    fn forms_escape_reserved_characters() {
        assert_eq!(
            form(&[
                ("scope", "db:connect ssh:login"),
                ("resource", "https://h/p")
            ]),
            "scope=db%3Aconnect%20ssh%3Alogin&resource=https%3A%2F%2Fh%2Fp"
        );
    }
}
