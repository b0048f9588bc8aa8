//! The connection edge of the MCP listener, plain or TLS: what a client can hold open, for how
//! long, and how much of the server's memory that can take.
//!
//! - **Connection cap** (`--max-connections`): a connection accepted over it is closed at once.
//! - **Unauthenticated connections per client address**
//!   (`--max-unauthenticated-connections-per-client`): a connection counts against its address
//!   until one of its requests authenticates ([`ConnectionSlot::authenticated`], called by
//!   [`crate::http`]); over the cap, a new connection from that address is closed at once.
//! - **Header-read timeout** (`--header-read-timeout`): hyper's, with a timer, on HTTP/1.1 (the
//!   request line and headers, and the wait for the next request of a kept-alive connection);
//!   HTTP/2 clients are bounded by the idle timeout and HTTP/2 keep-alive pings.
//! - **Idle timeout** (`--idle-timeout`): a connection with no request in flight for this long is
//!   closed gracefully; one that has not begun a first request within the header-read timeout
//!   too (hyper's timer starts only once it knows the protocol).
//! - **Buffers**: the HTTP/1.1 read buffer is bounded by [`read_buffer_bytes`]; HTTP/2 allows
//!   [`H2_MAX_STREAMS`] concurrent streams and a connection receive window of
//!   [`H2_CONNECTION_WINDOW`] bytes, so a client cannot make the server buffer more than that of
//!   request bodies it has not asked for. The memory these bound is summed in docs/server.md
//!   ("Limits and memory").
//!
//! Bodies, load shedding and the request timeout are per request, in [`crate::http`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::auth::ClientCertificate;
use crate::config::ServeArgs;
use crate::metrics::{ConnectionRefusal, Metrics};
use crate::tls::TlsConfig;

/// Most concurrent HTTP/2 streams per connection.
pub const H2_MAX_STREAMS: u32 = 8;
/// HTTP/2 receive window of one stream, in bytes.
pub const H2_STREAM_WINDOW: u32 = 16 * 1024;
/// HTTP/2 receive window of a whole connection, in bytes: the most request body data a client
/// can make the server hold for one connection before the server reads it.
pub const H2_CONNECTION_WINDOW: u32 = 32 * 1024;
/// Space in the HTTP/1.1 read buffer beyond the largest accepted head.
const READ_BUFFER_SLACK: usize = 8 * 1024;
/// Shards of the per-address table: callers on different addresses rarely wait for each other.
const SHARDS: usize = 16;

/// The HTTP/1.1 read buffer's bound: the largest accepted head plus room for body chunks (hyper
/// refuses less than 8 KiB).
pub fn read_buffer_bytes(max_header_bytes: usize) -> usize {
    (max_header_bytes + READ_BUFFER_SLACK).max(8 * 1024)
}

/// The edge's limits.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-unauthenticated-connections-per-client`.
    pub max_unauthenticated_per_client: usize,
    /// `--header-read-timeout`.
    pub header_read_timeout: Duration,
    /// `--idle-timeout`.
    pub idle_timeout: Duration,
    /// `--max-header-bytes`.
    pub max_header_bytes: usize,
}

impl EdgeLimits {
    /// The limits the flags set.
    pub fn from_args(args: &ServeArgs) -> Self {
        Self {
            max_connections: args.max_connections,
            max_unauthenticated_per_client: args.max_unauthenticated_connections_per_client,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            max_header_bytes: args.max_header_bytes,
        }
    }
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            max_unauthenticated_per_client: crate::config::DEFAULT_MAX_UNAUTHENTICATED_PER_CLIENT,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 << 10,
        }
    }
}

/// Open connections, in total and unauthenticated per client address.
pub struct Connections {
    limits: EdgeLimits,
    metrics: Arc<Metrics>,
    open: AtomicUsize,
    unauthenticated: [Mutex<HashMap<IpAddr, usize>>; SHARDS],
    started: Instant,
}

fn shard(address: &IpAddr) -> usize {
    let folded = match address {
        IpAddr::V4(v4) => u32::from(*v4) as usize,
        IpAddr::V6(v6) => {
            let bits = u128::from(*v6);
            (bits ^ (bits >> 64)) as usize
        }
    };
    folded % SHARDS
}

impl Connections {
    /// No connection open yet.
    pub fn new(limits: EdgeLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            metrics,
            open: AtomicUsize::new(0),
            unauthenticated: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            started: Instant::now(),
        })
    }

    /// A slot for a connection just accepted from `client`, or why it is refused.
    pub fn admit(self: &Arc<Self>, client: SocketAddr) -> Result<Arc<ConnectionSlot>, ConnectionRefusal> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnectionRefusal::ConnectionLimit);
        }
        let address = client.ip();
        {
            let mut table = self.unauthenticated[shard(&address)]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = table.entry(address).or_insert(0);
            if *count >= self.limits.max_unauthenticated_per_client {
                if *count == 0 {
                    table.remove(&address);
                }
                drop(table);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(ConnectionRefusal::UnauthenticatedPerClient);
            }
            *count += 1;
        }
        self.metrics.connections_open.inc();
        Ok(Arc::new(ConnectionSlot {
            connections: Arc::clone(self),
            address,
            unauthenticated: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.elapsed_ms()),
            used: AtomicBool::new(false),
        }))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn release_unauthenticated(&self, address: IpAddr) {
        let mut table = self.unauthenticated[shard(&address)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = table.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.remove(&address);
            }
        }
    }
}

/// One admitted connection; dropping it (when the connection ends) gives its places back.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    address: IpAddr,
    unauthenticated: AtomicBool,
    in_flight: AtomicUsize,
    last_active_ms: AtomicU64,
    /// Whether a request has begun on this connection.
    used: AtomicBool,
}

impl ConnectionSlot {
    /// A request of this connection authenticated: it no longer counts against its address's
    /// unauthenticated connections.
    pub fn authenticated(&self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            self.connections.release_unauthenticated(self.address);
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.used.store(true, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// Whether the connection has waited longer than `limit` for its first request. Before its
    /// first request, hyper may still be finding out the protocol (HTTP/1.1 or HTTP/2), a read
    /// its header timer does not cover.
    fn first_request_overdue(&self, limit: Duration) -> bool {
        !self.used.load(Ordering::Acquire) && self.idle_for() >= limit
    }

    /// How long the connection has had no request in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_active_ms.load(Ordering::Acquire);
        Duration::from_millis(self.connections.elapsed_ms().saturating_sub(last))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            self.connections.release_unauthenticated(self.address);
        }
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
        self.connections.metrics.connections_open.dec();
    }
}

struct InFlight(Arc<ConnectionSlot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let slot = &self.0;
        slot.last_active_ms
            .store(slot.connections.elapsed_ms(), Ordering::Release);
        slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The hyper connection builder with the edge's timer, timeouts and buffer bounds.
fn builder(limits: &EdgeLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(read_buffer_bytes(limits.max_header_bytes));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` completes, then
/// waits for open connections to finish their requests.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    connections: Arc<Connections>,
    tls: Option<Arc<TlsConfig>>,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // Dropped when shutdown begins: connections see it closed and shut down gracefully.
    let (signal_tx, signal_rx) = watch::channel(());
    // Each connection holds a receiver; all are dropped when every connection has ended.
    let (close_tx, close_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // For example too many open files: wait instead of spinning.
                    tracing::error!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match connections.admit(client) {
            Ok(slot) => slot,
            Err(reason) => {
                connections.metrics.connection_refused(reason);
                tracing::debug!(%client, reason = reason.as_str(), "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = connections.limits.clone();
        let mut signal = signal_rx.clone();
        let close = close_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, client, None, slot, router, &limits, signal).await,
                Some(tls) => {
                    let handshake = crate::tls::handshake(&tls, stream, client);
                    let accepted = tokio::select! {
                        accepted = handshake => accepted,
                        _ = signal.changed() => None,
                    };
                    if let Some((stream, certificate)) = accepted {
                        serve_connection(stream, client, certificate, slot, router, &limits, signal).await;
                    }
                }
            }
            drop(close);
        });
    }
    drop(listener);
    drop(signal_tx);
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}

/// Serves one connection: every request carries the client address, the verified client
/// certificate if any, and the connection's [`ConnectionSlot`].
async fn serve_connection<I>(
    io: I,
    client: SocketAddr,
    certificate: Option<ClientCertificate>,
    slot: Arc<ConnectionSlot>,
    router: Router,
    limits: &EdgeLimits,
    mut signal: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_slot = Arc::clone(&slot);
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(client));
        request.extensions_mut().insert(Arc::clone(&request_slot));
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        let in_flight = request_slot.begin();
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            drop(in_flight);
            response
        }
    });
    let builder = builder(limits);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
    let check_every = (limits.idle_timeout.min(limits.header_read_timeout) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut idle_check = tokio::time::interval(check_every);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, %client, "connection ended with an error");
                }
                break;
            }
            _ = signal.changed(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_check.tick(), if !shutting_down => {
                if slot.idle_for() >= limits.idle_timeout || slot.first_request_overdue(limits.header_read_timeout) {
                    tracing::trace!(%client, "closing an idle connection");
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(max: usize, per_client: usize) -> Arc<Connections> {
        Connections::new(
            EdgeLimits {
                max_connections: max,
                max_unauthenticated_per_client: per_client,
                ..EdgeLimits::default()
            },
            Arc::new(Metrics::new()),
        )
    }

    fn at(address: &str) -> SocketAddr {
        format!("{address}:40000").parse().expect("address")
    }

    #[test]
    fn the_connection_cap_refuses_and_frees_places() {
        let connections = connections(2, 10);
        let a = connections.admit(at("10.0.0.1")).expect("first");
        let _b = connections.admit(at("10.0.0.2")).expect("second");
        assert_eq!(
            connections.admit(at("10.0.0.3")).err(),
            Some(ConnectionRefusal::ConnectionLimit)
        );
        drop(a);
        assert_eq!(connections.open(), 1);
        assert!(connections.admit(at("10.0.0.3")).is_ok());
    }

    #[test]
    fn unauthenticated_connections_are_capped_per_address_until_one_authenticates() {
        let connections = connections(100, 2);
        let first = connections.admit(at("10.0.0.1")).expect("first");
        let _second = connections.admit(at("10.0.0.1")).expect("second");
        assert_eq!(
            connections.admit(at("10.0.0.1")).err(),
            Some(ConnectionRefusal::UnauthenticatedPerClient)
        );
        assert!(
            connections.admit(at("10.0.0.2")).is_ok(),
            "another address is not affected"
        );
        first.authenticated();
        first.authenticated(); // counted once
        let _third = connections
            .admit(at("10.0.0.1"))
            .expect("a place freed by authentication");
        assert_eq!(
            connections.admit(at("10.0.0.1")).err(),
            Some(ConnectionRefusal::UnauthenticatedPerClient)
        );
        drop(first); // authenticated already: frees no unauthenticated place
        assert_eq!(
            connections.admit(at("10.0.0.1")).err(),
            Some(ConnectionRefusal::UnauthenticatedPerClient)
        );
    }

    #[test]
    fn idle_time_counts_only_without_a_request_in_flight() {
        let connections = connections(10, 10);
        let slot = connections.admit(at("10.0.0.1")).expect("slot");
        let request = slot.begin();
        assert_eq!(slot.idle_for(), Duration::ZERO);
        drop(request);
        assert!(slot.idle_for() < Duration::from_secs(1));
    }

    #[test]
    fn the_read_buffer_holds_the_largest_head() {
        assert_eq!(read_buffer_bytes(16 << 10), 24 << 10);
        assert_eq!(read_buffer_bytes(0), 8 << 10);
    }
}
