//! tlsbench: loopback TLS benchmarks.
//!
//!   tlsbench server PORT CERT KEY      raw rustls echo server (the ceiling): one thread,
//!                                      an epoll loop, non-blocking sockets, 64 KiB reads
//!                                      (the engine's TLS read size); prints
//!                                      "listening on 127.0.0.1:PORT"
//!   tlsbench tserver PORT CERT KEY     the same echo with a blocking thread per connection
//!   tlsbench hs PORT CA SECONDS [CONC] [noverify]
//!                                      full handshakes (no resumption), each followed by
//!                                      a 1-byte echo, from CONC threads at once (default
//!                                      1); prints handshakes/s. `noverify` skips the
//!                                      client's certificate and signature checks so the
//!                                      load generator costs less than the server (the
//!                                      server's work is the same either way)
//!   tlsbench bulk PORT CA MIB          one connection, MIB MiB echoed (sent and received
//!                                      at once); prints MB/s of payload one way
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod poll_server;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn die(msg: String) -> ! {
    eprintln!("tlsbench: {msg}");
    std::process::exit(1)
}

fn server_config(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| die(format!("{cert}: {e}")))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| die(format!("{cert}: {e}")));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| die(format!("{key}: {e}")));
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap_or_else(|e| die(format!("cert/key: {e}")));
    Arc::new(cfg)
}

/// The thread-per-connection echo (blocking `StreamOwned`).
fn thread_server(port: u16, cert: &str, key: &str) {
    let cfg = server_config(cert, key);
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| die(format!("bind: {e}")));
    println!("listening on {}", l.local_addr().unwrap());
    io::stdout().flush().ok();
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let cfg = cfg.clone();
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tls.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
    }
}

fn client_config(ca: &str, verify: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| die(format!("{ca}: {e}"))) {
        roots
            .add(c.unwrap_or_else(|e| die(format!("{ca}: {e}"))))
            .unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled(); // every handshake is full
    if !verify {
        cfg.dangerous()
            .set_certificate_verifier(Arc::new(NoVerify(provider())));
    }
    Arc::new(cfg)
}

/// The load generator's shortcut (`hs … noverify`): accept any certificate and
/// signature, so that the client spends less per handshake than the server it
/// measures. Never a pattern for real clients.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connect(
    port: u16,
    cfg: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let s =
        TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| die(format!("connect: {e}")));
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    rustls::StreamOwned::new(conn, s)
}

/// Full handshakes from `conc` threads at once for `secs` seconds; prints the total
/// rate.
fn handshakes(port: u16, ca: &str, secs: f64, conc: usize, verify: bool) {
    let cfg = client_config(ca, verify);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let workers: Vec<_> = (0..conc.max(1))
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < end {
                    let mut t = connect(port, &cfg);
                    t.write_all(b"x")
                        .unwrap_or_else(|e| die(format!("handshake {n}: {e}")));
                    let mut b = [0u8; 1];
                    t.read_exact(&mut b)
                        .unwrap_or_else(|e| die(format!("echo {n}: {e}")));
                    t.conn.send_close_notify();
                    let _ = t.flush();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let el = start.elapsed().as_secs_f64();
    println!("handshakes {n} in {el:.2} s: {:.0} /s", n as f64 / el);
}

/// Send `mib` MiB and read the echo concurrently, on one non-blocking socket.
fn bulk(port: u16, ca: &str, mib: usize) {
    let cfg = client_config(ca, true);
    let mut t = connect(port, &cfg);
    while t.conn.is_handshaking() {
        t.conn
            .complete_io(&mut t.sock)
            .unwrap_or_else(|e| die(format!("handshake: {e}")));
    }
    t.sock.set_nonblocking(true).unwrap();
    let (mut conn, mut sock) = (t.conn, t.sock);
    conn.set_buffer_limit(Some(256 * 1024));
    let total = mib * 1024 * 1024;
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    let mut sent = 0usize;
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    while got < total {
        while sent < total {
            let want = (total - sent).min(chunk.len());
            let n = conn.writer().write(&chunk[..want]).unwrap();
            if n == 0 {
                break;
            }
            sent += n;
        }
        while conn.wants_write() {
            match conn.write_tls(&mut sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => die(format!("write: {e}")),
            }
        }
        // Read everything the kernel has before writing more: the echo must not
        // pile up in the server because this client only writes.
        let mut progressed = false;
        loop {
            match conn.read_tls(&mut sock) {
                Ok(0) => die(format!("server closed after {got} bytes")),
                Ok(_) => {
                    progressed = true;
                    conn.process_new_packets()
                        .unwrap_or_else(|e| die(format!("tls: {e}")));
                    while let Ok(n) = conn.reader().read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => die(format!("read: {e}")),
            }
        }
        if progressed {
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN | if conn.wants_write() { libc::POLLOUT } else { 0 },
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        if r == 0 {
            die(format!("stalled at {got}/{total} bytes"));
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "bulk {mib} MiB echoed in {el:.2} s: {:.0} MB/s each way",
        total as f64 / el / 1e6
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| {
        a.get(i)
            .cloned()
            .unwrap_or_else(|| die("missing argument (see source header)".into()))
    };
    let port = || {
        arg(2)
            .parse::<u16>()
            .unwrap_or_else(|_| die("bad port".into()))
    };
    match a.get(1).map(String::as_str) {
        Some("server") => poll_server::run(port(), server_config(&arg(3), &arg(4))),
        Some("tserver") => thread_server(port(), &arg(3), &arg(4)),
        Some("hs") => handshakes(
            port(),
            &arg(3),
            arg(4).parse().unwrap_or(5.0),
            a.get(5).and_then(|c| c.parse().ok()).unwrap_or(1),
            a.get(6).map(String::as_str) != Some("noverify"),
        ),
        Some("bulk") => bulk(port(), &arg(3), arg(4).parse().unwrap_or(256)),
        _ => die("usage: tlsbench server|tserver|hs|bulk ...".into()),
    }
}
