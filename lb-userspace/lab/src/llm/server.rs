//! The simulated model server's I/O: listeners, one thread a connection (HTTP/1.1,
//! keep-alive), and one scheduler thread that runs the [`Engine`] on the wall clock and
//! hands each request's tokens to its connection.

use std::{
    collections::HashMap,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    LlmError,
    model::{Engine, Event, Load, ModelParams},
};
use crate::lab::{Node, VIP4, VIP6};

/// The port the simulated model server listens on by default (vLLM's).
pub const LLM_PORT: u16 = 8000;
/// A keep-alive connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request head, and longest body.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;
/// Most `max_tokens` a request may ask for.
const MAX_TOKENS: u32 = 1 << 16;
/// How often the scheduler looks at the stop flag when idle.
const POLL: Duration = Duration::from_millis(100);
const STACK: usize = 256 * 1024;

enum Cmd {
    Submit {
        prompt: u64,
        max_tokens: u32,
        reply: Sender<Event>,
    },
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, TcpStream>>,
    load: Mutex<Load>,
}

/// A running simulated model server; stopped by [`LlmServer::stop`] or on drop.
#[derive(Debug)]
pub struct LlmServer {
    name: Arc<str>,
    params: ModelParams,
    shared: Arc<Shared>,
    listeners: Vec<Arc<TcpListener>>,
    threads: Vec<JoinHandle<()>>,
}

impl LlmServer {
    /// Listen on `port` (0: any) of every address in `addrs` (in the calling thread's
    /// network namespace) and serve from background threads.
    pub fn start(
        name: &str,
        addrs: &[IpAddr],
        port: u16,
        params: ModelParams,
    ) -> Result<Self, LlmError> {
        params.validate()?;
        if addrs.is_empty() {
            return Err(LlmError::Io("no address to listen on".into()));
        }
        let mut listeners = Vec::new();
        for &a in addrs {
            let l = TcpListener::bind((a, port)).map_err(|e| {
                LlmError::Io(format!("binding tcp {}: {e}", SocketAddr::new(a, port)))
            })?;
            listeners.push(Arc::new(l));
        }
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let mut server = Self {
            name: Arc::from(name),
            params: params.clone(),
            shared: shared.clone(),
            listeners: listeners.clone(),
            threads: Vec::new(),
        };
        let engine = Engine::new(params);
        server
            .threads
            .push(spawn("llm-sched", move || schedule(engine, &rx, &shared))?);
        for l in listeners {
            let ctx = Ctx {
                name: server.name.clone(),
                model: server.params.model_name.clone().into(),
                shared: server.shared.clone(),
                tx: tx.clone(),
            };
            server
                .threads
                .push(spawn("llm-accept", move || accept(&l, &ctx))?);
        }
        Ok(server)
    }

    /// Start it in backend `node`'s namespace on its own addresses and both VIPs, named
    /// like the node (`backend-k`).
    pub fn start_in(node: &Node, port: u16, params: ModelParams) -> Result<Self, LlmError> {
        let addrs = [
            node.addr4().into(),
            node.addr6().into(),
            VIP4.into(),
            VIP6.into(),
        ];
        let name = node.name();
        node.run(|| Self::start(&name, &addrs, port, params))
            .map_err(|e| LlmError::Io(format!("entering {}: {e}", node.ns())))?
    }

    /// The name it answers with (`X-Backend` header).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local addresses (with the ports actually bound).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Its parameters.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// The engine's load now (what `/metrics` shows).
    pub fn load(&self) -> Load {
        self.shared.load.lock().map_or(Load::default(), |l| *l)
    }

    /// Serve until the process is killed.
    pub fn wait(self) -> ! {
        loop {
            std::thread::park();
        }
    }

    /// Close the listeners and every open connection, and wait for the server's threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        crate::lab::server::close_all(
            &self.shared.stop,
            &mut self.listeners,
            &self.shared.conns,
            &mut self.threads,
        );
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(what: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, LlmError> {
    std::thread::Builder::new()
        .name(what.into())
        .stack_size(STACK)
        .spawn(f)
        .map_err(|e| LlmError::Io(format!("spawning a thread: {e}")))
}

/// The scheduler: the engine on the wall clock (µs since start).
fn schedule(mut engine: Engine, rx: &Receiver<Cmd>, shared: &Shared) {
    let start = Instant::now();
    let now = || u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut replies: HashMap<u64, Sender<Event>> = HashMap::new();
    let mut next_id = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let wait = engine
            .next_event_at()
            .map_or(POLL, |at| Duration::from_micros(at.saturating_sub(now())))
            .min(POLL);
        let events = match rx.recv_timeout(wait) {
            Ok(Cmd::Submit {
                prompt,
                max_tokens,
                reply,
            }) => {
                next_id += 1;
                replies.insert(next_id, reply);
                engine.submit(now(), next_id, prompt, max_tokens)
            }
            Err(RecvTimeoutError::Timeout) => engine.advance(now()),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for e in events {
            let (Event::Token { id, .. } | Event::Done { id, .. }) = e;
            let gone = replies.get(&id).is_none_or(|r| r.send(e).is_err());
            if gone {
                replies.remove(&id);
                engine.cancel(id);
            } else if matches!(e, Event::Done { .. }) {
                replies.remove(&id);
            }
        }
        if let Ok(mut l) = shared.load.lock() {
            *l = engine.load();
        }
    }
}

#[derive(Clone)]
struct Ctx {
    name: Arc<str>,
    model: Arc<str>,
    shared: Arc<Shared>,
    tx: Sender<Cmd>,
}

fn accept(l: &TcpListener, ctx: &Ctx) {
    for conn in l.incoming() {
        if ctx.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let id = ctx.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let (Ok(mut m), Ok(c)) = (ctx.shared.conns.lock(), conn.try_clone()) {
            m.insert(id, c);
        }
        let ctx2 = ctx.clone();
        let spawned = spawn("llm-conn", move || {
            let _ = serve(conn, &ctx2);
            if let Ok(mut m) = ctx2.shared.conns.lock() {
                m.remove(&id);
            }
        });
        if spawned.is_err()
            && let Ok(mut m) = ctx.shared.conns.lock()
            && let Some(c) = m.remove(&id)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// One request's head and body.
struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    body: Vec<u8>,
}

/// Read one request; `None` at a clean end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (method, path) = (method.to_owned(), target.to_owned());
    let mut keep_alive = version == "HTTP/1.1";
    let mut len = 0usize;
    let mut head = line.len();
    loop {
        let mut h = String::new();
        head += r.read_line(&mut h)?;
        if head > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            len = v
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        } else if k.eq_ignore_ascii_case("connection") {
            keep_alive = !v.eq_ignore_ascii_case("close")
                && (keep_alive || v.eq_ignore_ascii_case("keep-alive"));
        }
    }
    if len > MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too long"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        keep_alive,
        body,
    }))
}

fn serve(conn: TcpStream, ctx: &Ctx) -> io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        let keep = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/completions") => completion(&mut w, ctx, &req)?,
            ("GET", "/metrics") => {
                let load = ctx.shared.load.lock().map_or(Load::default(), |l| *l);
                let body = super::metrics_text(&ctx.model, &load);
                respond(
                    &mut w,
                    ctx,
                    req.keep_alive,
                    "200 OK",
                    "text/plain; version=0.0.4",
                    &body,
                )?
            }
            ("GET", "/health") => respond(&mut w, ctx, req.keep_alive, "200 OK", "text/plain", "")?,
            _ => respond(
                &mut w,
                ctx,
                req.keep_alive,
                "404 Not Found",
                "application/json",
                r#"{"error":"not found"}"#,
            )?,
        };
        if !keep {
            break;
        }
    }
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}

/// Write a whole response; whether the connection stays open.
fn respond(
    w: &mut TcpStream,
    ctx: &Ctx,
    keep_alive: bool,
    status: &str,
    ctype: &str,
    body: &str,
) -> io::Result<bool> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Backend: {}\r\nConnection: {conn}\r\n\r\n",
        body.len(),
        ctx.name
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    Ok(keep_alive)
}

/// The body of `POST /v1/completions`: prompt tokens, max tokens, stream.
fn parse_completion(body: &[u8]) -> Result<(u64, u32, bool), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let prompt = match (v.get("prompt_tokens"), v.get("prompt")) {
        (Some(n), _) => n.as_u64().ok_or("prompt_tokens: not a whole number")?,
        // A word is a token, roughly.
        (None, Some(p)) => p
            .as_str()
            .ok_or("prompt: not a string")?
            .split_whitespace()
            .count() as u64,
        (None, None) => 0,
    };
    let max_tokens = match v.get("max_tokens") {
        None => 16,
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_TOKENS).contains(n))
            .ok_or(format!(
                "max_tokens: not a whole number in 1..={MAX_TOKENS}"
            ))?,
    };
    let stream = v
        .get("stream")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok((prompt, max_tokens, stream))
}

fn completion(w: &mut TcpStream, ctx: &Ctx, req: &Request) -> io::Result<bool> {
    let (prompt, max_tokens, stream) = match parse_completion(&req.body) {
        Ok(p) => p,
        Err(e) => {
            let body = serde_json::json!({ "error": { "message": e } }).to_string();
            return respond(
                w,
                ctx,
                req.keep_alive,
                "400 Bad Request",
                "application/json",
                &body,
            );
        }
    };
    let (reply, events) = mpsc::channel();
    let submitted = ctx.tx.send(Cmd::Submit {
        prompt,
        max_tokens,
        reply,
    });
    if submitted.is_err() {
        return respond(
            w,
            ctx,
            false,
            "503 Service Unavailable",
            "text/plain",
            "stopping\n",
        );
    }
    let conn = if req.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    if !stream {
        let mut n = 0u32;
        while let Ok(e) = events.recv() {
            match e {
                Event::Token { .. } => n += 1,
                Event::Done { .. } => break,
            }
        }
        let body = serde_json::json!({
            "object": "text_completion",
            "model": &*ctx.model,
            "choices": [{ "index": 0, "text": "tok ".repeat(n as usize), "finish_reason": "length" }],
            "usage": { "prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + u64::from(n) },
        });
        return respond(
            w,
            ctx,
            req.keep_alive,
            "200 OK",
            "application/json",
            &body.to_string(),
        );
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nX-Backend: {}\r\nConnection: {conn}\r\n\r\n",
        ctx.name
    );
    w.write_all(head.as_bytes())?;
    let chunk = |w: &mut TcpStream, data: &str| -> io::Result<()> {
        let event = format!("data: {data}\n\n");
        write!(w, "{:x}\r\n{event}\r\n", event.len())
    };
    loop {
        match events.recv() {
            Ok(Event::Token { .. }) => chunk(w, r#"{"choices":[{"index":0,"text":"tok "}]}"#)?,
            Ok(Event::Done { .. }) => break,
            // The scheduler stopped: end the response without [DONE].
            Err(_) => {
                w.write_all(b"0\r\n\r\n")?;
                return Ok(false);
            }
        }
    }
    chunk(w, "[DONE]")?;
    w.write_all(b"0\r\n\r\n")?;
    Ok(req.keep_alive)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::llm::client::Client;

    fn server(speed: f64) -> LlmServer {
        let params = ModelParams {
            decode_base_ms: 2.0,
            speed,
            ..ModelParams::default()
        };
        LlmServer::start("t", &[Ipv4Addr::LOCALHOST.into()], 0, params).expect("start")
    }

    #[test]
    fn keep_alive_errors_and_speed_on_loopback() {
        let (fast, slow) = (server(1.0), server(0.25));
        let timeout = Duration::from_secs(5);
        let mut c = Client::connect(None, fast.addrs()[0], timeout).expect("connect");
        let a = c.complete(10, 10).expect("first");
        let (status, _) = c.get("/nope").expect("404 on the same connection");
        assert_eq!(status, 404);
        let (status, text) = c.get("/metrics").expect("metrics");
        assert_eq!(status, 200);
        assert!(super::super::parse_metrics(&text).is_ok(), "{text}");
        assert_eq!(c.complete(10, 5).expect("third").tokens, 5);
        assert!(matches!(c.complete(10, 0), Err(LlmError::Protocol(e)) if e.contains("400")));
        let mut s = Client::connect(None, slow.addrs()[0], timeout).expect("connect");
        let b = s.complete(10, 10).expect("slow");
        assert_eq!((a.tokens, b.tokens), (10, 10));
        // 4× slower per step (2 ms vs 8 ms); loose bounds for a loaded machine.
        assert!(b.total > a.total * 2, "fast {a:?} slow {b:?}");
        assert!(b.mean_itl >= Duration::from_millis(7), "{b:?}");
        fast.stop();
        slow.stop();
    }
}
