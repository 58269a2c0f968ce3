//! A fault-injecting TCP proxy between a snapkv process and the S3 test server.
//!
//! Each request on a connection (HTTP/1.1, one at a time) is matched against the armed rules
//! by method and a part of its path; the first rule that matches decides what happens to it:
//! the response is cut, stalled or corrupted at a byte of its body, sent slowly, or the
//! request is held (never forwarded) so that the test can kill the process at that point.
//! `Refuse` rules close new connections before any request.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happens to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is closed after this many bytes of the response body.
    Cut(usize),
    /// The response stops after this many bytes of its body until [`Proxy::release`] (or
    /// until the client gives up and closes).
    Stall(usize),
    /// The response body's byte at this offset is flipped.
    Corrupt(usize),
    /// The response is sent at this many bytes per second.
    Slow(usize),
    /// The request is held, never forwarded, until [`Proxy::release`]; then the connection
    /// is closed.
    Hold,
    /// New connections are closed at once.
    Refuse,
}

/// An armed fault: requests with `method` whose path contains `path` (any, when empty), at
/// most `times` of them (`None`: until disarmed).
#[derive(Debug, Clone)]
struct Rule {
    method: String,
    path: String,
    fault: Fault,
    times: Option<usize>,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    /// Faults that fired.
    fired: AtomicUsize,
    /// Connections held or stalled now.
    waiting: AtomicUsize,
    /// Bumped by `release`: connections waiting since an earlier value go on.
    generation: AtomicUsize,
    /// Every request line seen, in order.
    requests: Mutex<Vec<String>>,
    /// The client side of every connection relayed.
    connections: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

impl Shared {
    /// The fault for a request, counting it down.
    fn take(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let i = rules.iter().position(|r| {
            r.fault != Fault::Refuse
                && (r.method.is_empty() || r.method == method)
                && path.contains(&r.path)
        })?;
        Some(self.fire(&mut rules, i))
    }

    fn take_refuse(&self) -> bool {
        let mut rules = self.rules.lock().unwrap();
        match rules.iter().position(|r| r.fault == Fault::Refuse) {
            Some(i) => {
                self.fire(&mut rules, i);
                true
            }
            None => false,
        }
    }

    fn fire(&self, rules: &mut Vec<Rule>, i: usize) -> Fault {
        let fault = rules[i].fault;
        if let Some(t) = &mut rules[i].times {
            *t -= 1;
            if *t == 0 {
                rules.remove(i);
            }
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        fault
    }

    /// Waits until `release` is called (or 60 s pass, or the proxy stops).
    fn wait_for_release(&self) {
        let seen = self.generation.load(Ordering::SeqCst);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.generation.load(Ordering::SeqCst) == seen
            && !self.stop.load(Ordering::SeqCst)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The proxy, listening on 127.0.0.1; it stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (s, upstream) = (Arc::clone(&shared), upstream.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if s.take_refuse() {
                    drop(client);
                    continue;
                }
                let (s, upstream) = (Arc::clone(&s), upstream.clone());
                std::thread::spawn(move || relay(client, &upstream, &s));
            }
        });
        Proxy { addr, shared }
    }

    /// The proxy's endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Arms `fault` for requests with `method` (any: "") whose path contains `path`, at most
    /// `times` of them (`None`: until [`Proxy::disarm`]).
    pub fn arm(&self, method: &str, path: &str, fault: Fault, times: Option<usize>) {
        self.shared.rules.lock().unwrap().push(Rule {
            method: method.to_owned(),
            path: path.to_owned(),
            fault,
            times,
        });
    }

    /// Removes every armed rule.
    pub fn disarm(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Lets held and stalled connections go on.
    pub fn release(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Closes every connection open now (clients that keep connections alive then make new
    /// ones, which `Refuse` rules reach).
    pub fn cut_connections(&self) {
        for c in self.shared.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// How many faults fired so far.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Waits until a connection is held or stalled.
    pub fn wait_until_waiting(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.shared.waiting.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "no request reached the fault; requests seen: {:#?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// The fault of the request under way on a connection, and how far its response got.
#[derive(Default)]
struct Exchange {
    fault: Option<Fault>,
    /// Bytes of the response so far (headers included).
    sent: usize,
    /// Where offset 0 of the object would be in the response (the end of the headers, less
    /// the start of a ranged answer), once the headers ended.
    body_at: Option<i64>,
    /// The response's first bytes, until the end of its headers is found.
    head: Vec<u8>,
}

/// The first byte a ranged answer holds (`Content-Range: bytes START-END/TOTAL`), else 0.
fn range_start(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("content-range") {
                return None;
            }
            let range = value.trim().strip_prefix("bytes ")?;
            range.split('-').next()?.trim().parse().ok()
        })
        .unwrap_or(0)
}

const METHODS: [&str; 5] = ["GET ", "HEAD ", "PUT ", "POST ", "DELETE "];

fn relay(client: TcpStream, upstream: &str, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    if let Ok(c) = client.try_clone() {
        shared.connections.lock().unwrap().push(c);
    }
    let exchange = Arc::new(Mutex::new(Exchange::default()));
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (s, x) = (Arc::clone(shared), Arc::clone(&exchange));
    let (c_close, s_close) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Requests: client to server. A chunk that starts with a method starts a request (the
    // clients here send one request at a time, and bodies are not matched on).
    let requests = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match c_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if METHODS.iter().any(|m| chunk.starts_with(m.as_bytes())) {
                let line = String::from_utf8_lossy(chunk.split(|&b| b == b'\r').next().unwrap())
                    .into_owned();
                let mut words = line.split(' ');
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let fault = s.take(method, path);
                s.requests.lock().unwrap().push(line.clone());
                *x.lock().unwrap() = Exchange {
                    fault,
                    ..Exchange::default()
                };
                if fault == Some(Fault::Hold) {
                    s.wait_for_release();
                    let _ = c_close.shutdown(Shutdown::Both);
                    let _ = s_close.shutdown(Shutdown::Both);
                    return;
                }
            }
            if s_out.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    // Responses: server to client, through the fault of the request they answer.
    let (mut s_in, mut c_out) = (server, client);
    let mut buf = vec![0u8; 64 << 10];
    'responses: loop {
        let n = match s_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        let (fault, body_from) = {
            let mut x = exchange.lock().unwrap();
            let start = x.sent;
            x.sent += n;
            if x.body_at.is_none() {
                x.head.extend_from_slice(&chunk);
                if let Some(end) = x.head.windows(4).position(|w| w == b"\r\n\r\n") {
                    // Offsets are in the object: a ranged answer's body starts at its range.
                    let first = range_start(&x.head[..end]);
                    x.body_at = Some((end + 4) as i64 - first as i64);
                }
            }
            // The offset in the body of the chunk's first byte (negative: still headers).
            let body_from = x.body_at.map(|b| start as i64 - b);
            (x.fault, body_from)
        };
        let Some(from) = body_from else {
            if c_out.write_all(&chunk).is_err() {
                break;
            }
            continue;
        };
        // The part of the chunk before body offset `at`, and the rest.
        let split = |at: usize| (at as i64 - from).clamp(0, n as i64) as usize;
        match fault {
            Some(Fault::Corrupt(at)) => {
                let i = at as i64 - from;
                if (0..n as i64).contains(&i) {
                    chunk[i as usize] ^= 0x5a;
                }
            }
            Some(Fault::Cut(at)) if split(at) < n || from + n as i64 >= at as i64 => {
                let _ = c_out.write_all(&chunk[..split(at)]);
                let _ = c_out.shutdown(Shutdown::Both);
                let _ = s_in.shutdown(Shutdown::Both);
                break 'responses;
            }
            Some(Fault::Stall(at)) if split(at) < n => {
                if c_out.write_all(&chunk[..split(at)]).is_err() {
                    break;
                }
                shared.wait_for_release();
                exchange.lock().unwrap().fault = None;
                if c_out.write_all(&chunk[split(at)..]).is_err() {
                    break;
                }
                continue;
            }
            Some(Fault::Slow(rate)) => {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
            }
            _ => {}
        }
        if c_out.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = requests.join();
}
