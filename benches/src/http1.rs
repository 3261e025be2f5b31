//! A minimal HTTP/1.1 keep-alive client for the push loop.
//!
//! The load generator shares the machine's cores with the server it measures, so every microsecond
//! of client CPU per request is taken from the server. A general-purpose client (hyper's, with a
//! request builder, a header map and a connection task per socket) cost about 16-19 µs of CPU per push
//! here; this one writes a pre-rendered request with one `write` and parses the answer in place with
//! `httparse`, on the worker's own task, which is what wrk does.
//!
//! It understands what Pushgateway-compatible servers answer: `Content-Length` or chunked bodies,
//! `Connection: close`, and bodies delimited by the end of the connection.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Most headers a response may have.
const MAX_HEADERS: usize = 32;
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body kept (a longer body is read and dropped past this size).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// One response: its status, the start of its body (for error messages) and whether the server
/// closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub close: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parsed head of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    len: usize,
    framing: Framing,
    close: bool,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses a response head at the start of `buf`; `None` when more bytes are needed.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(invalid("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("malformed response: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::UntilClose;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("invalid Content-Length"))?;
            if framing != Framing::Chunked {
                framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                framing = Framing::Chunked;
            } else {
                return Err(invalid("unsupported Transfer-Encoding"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    // 1xx, 204 and 304 answers have no body whatever the headers say.
    if status < 200 || status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    if framing == Framing::UntilClose {
        close = true;
    }
    Ok(Some(Head {
        status,
        len,
        framing,
        close,
    }))
}

/// Decodes a complete chunked body at the start of `buf`: the body and the bytes consumed
/// (trailers included), or `None` when more bytes are needed.
fn parse_chunked(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = &buf[at..at + eol];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(line);
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| invalid("invalid chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[at..]) else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        let room = MAX_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&buf[at..at + size.min(room)]);
        at += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The request being written (head and body in one buffer, one `write`).
    out: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(4096),
        })
    }

    /// Sends one request (a complete head ending in an empty line, and its body) and reads the
    /// response. After an error, or a response with `close`, the connection must be dropped.
    pub async fn request(&mut self, head: &[u8], body: &[u8]) -> io::Result<Response> {
        self.out.clear();
        self.out.extend_from_slice(head);
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.read_response().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        Ok(n)
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let (body, consumed) = match head.framing {
            Framing::Length(n) => {
                while self.buf.len() < head.len + n {
                    if self.fill().await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let body = &self.buf[head.len..head.len + n];
                (body[..n.min(MAX_BODY_BYTES)].to_vec(), head.len + n)
            }
            Framing::Chunked => loop {
                if let Some((body, used)) = parse_chunked(&self.buf[head.len..])? {
                    break (body, head.len + used);
                }
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            },
            Framing::UntilClose => {
                while self.fill().await? > 0 {}
                let body = &self.buf[head.len..];
                (
                    body[..body.len().min(MAX_BODY_BYTES)].to_vec(),
                    self.buf.len(),
                )
            }
        };
        self.buf.drain(..consumed);
        Ok(Response {
            status: head.status,
            body,
            close: head.close,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_by_length_chunks_or_close() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.framing, h.close),
            (200, Framing::Length(0), false)
        );
        assert_eq!(h.len, 38);

        let h = parse_head(
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.status, h.framing, h.close),
            (400, Framing::Chunked, true)
        );

        let h = parse_head(b"HTTP/1.0 202 Accepted\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));

        let h = parse_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_decode_and_wait_for_more() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let (body, used) = parse_chunked(wire).unwrap().unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&wire[used..], b"NEXT");
        for cut in 0..wire.len() - 4 {
            assert_eq!(parse_chunked(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse_chunked(b"zz\r\n").is_err());
        assert!(parse_chunked(b"2\r\nabXY").is_err());
    }

    #[tokio::test]
    async fn keep_alive_exchanges_over_a_real_socket() {
        use tokio::io::AsyncBufReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A server that answers three requests on one connection: two with Content-Length (sent
        // in pieces), one chunked, and reads each request's body by its Content-Length.
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = tokio::io::BufReader::new(stream);
            let answers: [&[&[u8]]; 3] = [
                &[b"HTTP/1.1 200 OK\r\nContent-Len", b"gth: 2\r\n\r\nok"],
                &[b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n"],
                &[b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"],
            ];
            for answer in answers {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                assert_eq!(body, b"a 1\n");
                for piece in answer {
                    stream.get_mut().write_all(piece).await.unwrap();
                    stream.get_mut().flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        });
        let mut conn = Conn::connect(addr).await.unwrap();
        let head = b"PUT /metrics/job/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n";
        let r = conn.request(head, b"a 1\n").await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"ok"[..], false)
        );
        let r = conn.request(head, b"a 1\n").await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (400, &b"bad"[..], false)
        );
        let r = conn.request(head, b"a 1\n").await.unwrap();
        assert_eq!((r.status, r.close), (202, true));
        server.await.unwrap();
    }
}
