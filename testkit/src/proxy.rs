//! A TCP proxy in front of PostgreSQL that a test can take down, silence and bring back, to show
//! what the service does when the database goes away: `down` refuses new connections and cuts
//! open ones (the peer sees them close); `silence` stops forwarding without closing anything,
//! as a failover or a dead network path does (no reset, no answer: only timeouts notice).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

const UP: u8 = 0;
const DOWN: u8 = 1;
const SILENT: u8 = 2;

pub struct PgProxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: Arc<AtomicU64>,
    /// Connections silenced: held open, never forwarded again, never closed.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl PgProxy {
    /// Proxies to `target` (host:port), up at first.
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(UP));
        let generation = Arc::new(AtomicU64::new(0));
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (mode2, gen2, held2) = (mode.clone(), generation.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                match mode2.load(Ordering::SeqCst) {
                    DOWN => {
                        drop(client);
                        continue;
                    }
                    SILENT => {
                        held2.lock().unwrap().push(client);
                        continue;
                    }
                    _ => {}
                }
                let target = target.clone();
                let mine = gen2.load(Ordering::SeqCst);
                let (gen3, mode3, held3) = (gen2.clone(), mode2.clone(), held2.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let cut = async {
                        while gen3.load(Ordering::SeqCst) == mine {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut => {
                            if mode3.load(Ordering::SeqCst) == SILENT {
                                let mut held = held3.lock().unwrap();
                                held.push(client);
                                held.push(server);
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            mode,
            generation,
            held,
        }
    }

    /// New connections are closed at once and open ones are cut (within 20 ms; this waits
    /// for that).
    pub async fn down(&self) {
        self.mode.store(DOWN, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    /// Nothing is forwarded any more and nothing is closed: open connections and new ones are
    /// held silent (within 20 ms; this waits for that). They stay dead after [`PgProxy::up`].
    pub async fn silence(&self) {
        self.mode.store(SILENT, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    /// New connections are forwarded again.
    pub fn up(&self) {
        self.mode.store(UP, Ordering::SeqCst);
    }

    /// How many connections are held silent.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// `url` with its host and port replaced by this proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[scheme_end..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..host_end];
        let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{}{}{}{}",
            &url[..scheme_end],
            userinfo.unwrap_or_default(),
            self.addr,
            &rest[host_end..]
        )
    }
}

/// `host:port` of a PostgreSQL URL.
pub fn host_port(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let hp = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:5432")
    }
}
