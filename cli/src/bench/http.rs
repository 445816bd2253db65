//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream` for `kiln bench serve`: one
//! request per connection (`Connection: close`), chunked or sized bodies, and a server-sent events
//! line parser. Enough to talk to kiln serve and llama-server without pulling an async HTTP stack
//! into the CLI; plain `http://` only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// `http://host[:port][/base]`, the server's root.
#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for the root).
    pub base: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url> {
        let rest = match s.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                bail!("--url {s:?}: only http:// is supported, not {scheme}://")
            }
            None => bail!("--url {s:?}: expected http://HOST[:PORT], e.g. http://127.0.0.1:8080"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("--url {s:?}: no host");
        }
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal's colons are inside brackets.
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| anyhow!("--url {s:?}: port {p:?} is not a number 0-65535"))?;
                (h, port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            bail!("--url {s:?}: no host");
        }
        Ok(Url {
            host: host.to_string(),
            port,
            base: path.trim_end_matches('/').to_string(),
        })
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.base)
    }
}

/// A response whose body is read as it arrives.
pub struct Response {
    pub status: u16,
    pub body: Box<dyn BufRead + Send>,
}

impl Response {
    /// The whole body as text.
    pub fn text(mut self) -> Result<String> {
        let mut s = String::new();
        self.body
            .read_to_string(&mut s)
            .context("reading the response body")?;
        Ok(s)
    }

    /// The whole body as JSON, or an error carrying the status and body when not 2xx.
    pub fn json(self) -> Result<serde_json::Value> {
        let status = self.status;
        let text = self.text()?;
        if !(200..300).contains(&status) {
            bail!("HTTP {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("response is not JSON: {text:.200}"))
    }
}

/// Sends one request; `body` is JSON when given.
pub fn request(
    url: &Url,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    api_key: Option<&str>,
    timeout: Duration,
) -> Result<Response> {
    let addr = (url.host.trim_matches(['[', ']']), url.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", url.host))?
        .next()
        .ok_or_else(|| anyhow!("{} resolves to no address", url.host))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting to {url}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: */*\r\nConnection: close\r\n",
        url.base, url.host, url.port
    );
    if body.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    if let Some(key) = api_key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = &stream;
    writer
        .write_all(head.as_bytes())
        .and_then(|_| writer.write_all(payload.as_bytes()))
        .with_context(|| format!("sending {method} {path} to {url}"))?;
    read_response(BufReader::new(stream)).with_context(|| format!("{method} {path} on {url}"))
}

/// Parses the status line and headers, and frames the body (chunked, sized, or up to close).
fn read_response<R: BufRead + Send + 'static>(mut reader: R) -> Result<Response> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| anyhow!("not an HTTP response: {:?}", line.trim_end()))?;
    let mut chunked = false;
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the response headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<u64>().ok();
            }
        }
    }
    let body: Box<dyn BufRead + Send> = if chunked {
        Box::new(BufReader::new(Chunked::new(reader)))
    } else if let Some(n) = length {
        Box::new(reader.take(n))
    } else {
        Box::new(reader)
    };
    Ok(Response { status, body })
}

/// `Transfer-Encoding: chunked` decoding, handing out data as each chunk arrives (SSE events
/// must be timed when they come, not when the response ends).
pub struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                return Err(invalid("connection closed inside a chunked body".into()));
            }
            let size = line.trim_end().split(';').next().unwrap_or("").trim();
            self.left = u64::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {:?}", line.trim_end())))?;
            if self.left == 0 {
                // Trailers (usually none) end with an empty line; the connection closes after.
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(invalid("connection closed inside a chunk".into()));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(n)
    }
}

/// Server-sent events, fed one line at a time: `data:` lines gather, an empty line ends the event,
/// `:` lines are comments (keep-alives), other fields (`event:`, `id:`) are ignored.
#[derive(Default)]
pub struct SseParser {
    data: Option<String>,
}

impl SseParser {
    /// The event's data when `line` completes one.
    pub fn push_line(&mut self, line: &str) -> Option<String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return self.data.take();
        }
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => self.data = Some(rest.to_string()),
            }
        }
        None
    }

    /// What is left when the stream ends without a final empty line.
    pub fn finish(&mut self) -> Option<String> {
        self.data.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("127.0.0.1", 8080, "")
        );
        let u = Url::parse("http://localhost/api/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("localhost", 80, "/api")
        );
        let u = Url::parse("http://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9000));
        for bad in [
            "localhost:8080",
            "https://x",
            "http://",
            "http://h:port",
            "http://:80",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn decodes_chunked_sse() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
                   f\r\ndata: {\"a\":1}\n\n\r\n\
                   e\r\n: keep-alive\n\n\r\n\
                   8\r\ndata: [D\r\n\
                   6\r\nONE]\n\n\r\n\
                   0\r\n\r\n";
        let resp = read_response(std::io::Cursor::new(raw.as_bytes().to_vec())).unwrap();
        assert_eq!(resp.status, 200);
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for line in resp.body.lines() {
            events.extend(parser.push_line(&line.unwrap()));
        }
        events.extend(parser.finish());
        assert_eq!(events, vec!["{\"a\":1}".to_string(), "[DONE]".to_string()]);
    }

    #[test]
    fn sized_bodies_and_errors() {
        let raw = "HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\n{\"e\":1}trailing";
        let resp = read_response(std::io::Cursor::new(raw.as_bytes().to_vec())).unwrap();
        assert_eq!(resp.status, 400);
        let err = resp.json().unwrap_err().to_string();
        assert!(
            err.contains("HTTP 400") && err.contains("{\"e\":1}"),
            "{err}"
        );
        assert!(read_response(std::io::Cursor::new(b"garbage\r\n".to_vec())).is_err());
    }

    #[test]
    fn multi_line_sse_data() {
        let mut p = SseParser::default();
        assert_eq!(p.push_line("event: x"), None);
        assert_eq!(p.push_line("data: a"), None);
        assert_eq!(p.push_line("data:b"), None);
        assert_eq!(p.push_line(""), Some("a\nb".to_string()));
        assert_eq!(p.push_line(""), None);
    }
}
