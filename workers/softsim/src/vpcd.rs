//! The vpcd transport: puts a [`CardModel`] into a pcscd virtual reader over TCP.
//!
//! The card is the TCP client of pcscd's vpcd driver. Frames are a 2-byte big-endian length and
//! the body, both ways; a 1-byte body is a control (00 power off, 01 power on, 02 reset,
//! 04 get ATR), anything longer is an APDU answered with `data ‖ SW1 SW2`. Closing the socket
//! is pulling the card out.
//!
//! After every read the socket gets `TCP_QUICKACK` again: Debian's vpcd sends the length and
//! the body as two segments, and without an immediate ACK the second one waits for the 40 ms
//! delayed-ACK timer, on every APDU.
//!
//! This module owns the sockets and the timing (fault delays); it never logs APDU bytes.

use crate::card::{ApduCounters, CardModel, CardSnapshot};
use crate::image::{CardImage, Faults, ImageError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// pcscd's first vpcd port as Debian configures it.
pub const DEFAULT_VPCD_ADDR: &str = "127.0.0.1:35963";

/// How often a card retries connecting while pcscd is not listening.
const CONNECT_RETRY: Duration = Duration::from_millis(25);

/// An ATR longer than ISO 7816-3's 33 bytes: what a "mute" card answers (see [`Faults::mute`]).
const OVERLONG_ATR: [u8; 40] = [0x3B; 40];

/// A software SIM: one card that can be inserted into (and pulled from) virtual readers.
/// Clones share the same card, so state survives removal and re-insertion.
#[derive(Clone)]
pub struct SoftSim {
    card: Arc<Mutex<CardModel>>,
    faults: Faults,
    quickack: bool,
}

impl std::fmt::Debug for SoftSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftSim")
            .field("faults", &self.faults)
            .field("quickack", &self.quickack)
            .finish()
    }
}

/// Where an inserted card stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardState {
    /// Waiting for pcscd to accept the connection.
    Connecting,
    /// Connected: pcscd sees a card in the reader.
    Inserted,
    /// Pulled by the `pull_after_apdus` fault (possibly to be re-inserted).
    Pulled,
    /// Removed through [`InsertedCard::remove`].
    Removed,
}

/// What serving one connection ended with.
enum ServeEnd {
    Cancelled,
    Pulled,
    Disconnected,
}

impl SoftSim {
    /// A well-behaved card from an image.
    pub fn new(image: CardImage) -> Result<Self, ImageError> {
        SoftSim::with_faults(image, Faults::default())
    }

    /// A card that misbehaves as `faults` says.
    pub fn with_faults(image: CardImage, faults: Faults) -> Result<Self, ImageError> {
        let card = CardModel::from_image(&image, faults.wrong_adm)?;
        Ok(SoftSim {
            card: Arc::new(Mutex::new(card)),
            faults,
            quickack: true,
        })
    }

    /// Turn the per-read TCP_QUICKACK off (for measuring what it saves).
    pub fn without_quickack(mut self) -> Self {
        self.quickack = false;
        self
    }

    fn lock(&self) -> MutexGuard<'_, CardModel> {
        lock(&self.card)
    }

    /// The card's files and security counters now.
    pub fn snapshot(&self) -> CardSnapshot {
        self.lock().snapshot()
    }

    /// APDUs the card has answered so far, over all insertions.
    pub fn counters(&self) -> ApduCounters {
        self.lock().counters().clone()
    }

    /// Insert the card into the vpcd reader listening at `vpcd` (pcscd's port for that reader).
    /// Returns at once; the card keeps retrying its connection until pcscd listens.
    /// Needs a running tokio runtime.
    pub fn insert(&self, vpcd: SocketAddr) -> InsertedCard {
        let cancel = CancellationToken::new();
        let (state_tx, state_rx) = watch::channel(CardState::Connecting);
        let task = tokio::spawn(run_card(self.clone(), vpcd, cancel.clone(), state_tx));
        InsertedCard {
            cancel,
            task,
            state: state_rx,
        }
    }
}

fn lock(card: &Mutex<CardModel>) -> MutexGuard<'_, CardModel> {
    // A panic while holding the lock leaves a consistent card (every APDU is applied whole).
    card.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A card sitting in a reader. Dropping the handle pulls the card too.
#[derive(Debug)]
pub struct InsertedCard {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    state: watch::Receiver<CardState>,
}

impl InsertedCard {
    /// Where the card stands now.
    pub fn state(&self) -> CardState {
        *self.state.borrow()
    }

    /// Wait until the card's state satisfies `pred` (or its task ended).
    pub async fn wait_for(&mut self, pred: impl Fn(CardState) -> bool) -> CardState {
        if let Ok(state) = self.state.wait_for(|state| pred(*state)).await {
            return *state;
        }
        *self.state.borrow()
    }

    /// Wait until pcscd accepted the card's connection.
    pub async fn connected(&mut self) {
        self.wait_for(|state| state == CardState::Inserted).await;
    }

    /// Pull the card out of the reader and wait until the socket is closed.
    pub async fn remove(mut self) {
        self.cancel.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for InsertedCard {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn run_card(
    sim: SoftSim,
    vpcd: SocketAddr,
    cancel: CancellationToken,
    state: watch::Sender<CardState>,
) {
    let mut pull_pending = sim.faults.pull_after_apdus;
    loop {
        let mut stream = tokio::select! {
            _ = cancel.cancelled() => break,
            stream = connect_with_retry(vpcd) => stream,
        };
        let _ = stream.set_nodelay(true);
        let _ = state.send(CardState::Inserted);
        tracing::debug!(%vpcd, "soft SIM inserted");
        let end = serve(&sim, &mut stream, &cancel, pull_pending).await;
        drop(stream);
        // Taking the card out powers it down.
        lock(&sim.card).power_off();
        match end {
            ServeEnd::Cancelled => break,
            ServeEnd::Disconnected => {
                tracing::debug!(%vpcd, "vpcd closed the connection; reconnecting");
                let _ = state.send(CardState::Connecting);
            }
            ServeEnd::Pulled => {
                pull_pending = None;
                let _ = state.send(CardState::Pulled);
                tracing::debug!(%vpcd, "soft SIM pulled by fault");
                let Some(delay) = sim.faults.reinsert_after else {
                    cancel.cancelled().await;
                    break;
                };
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                let _ = state.send(CardState::Connecting);
            }
        }
    }
    let _ = state.send(CardState::Removed);
}

async fn connect_with_retry(vpcd: SocketAddr) -> TcpStream {
    loop {
        match TcpStream::connect(vpcd).await {
            Ok(stream) => return stream,
            Err(_) => tokio::time::sleep(CONNECT_RETRY).await,
        }
    }
}

fn quickack(stream: &TcpStream, enabled: bool) {
    if enabled {
        // Best effort: a socket that refuses it only costs latency.
        let _ = rustix::net::sockopt::set_tcp_quickack(stream, true);
    }
}

async fn read_frame(stream: &mut TcpStream, quick: bool) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    quickack(stream, quick);
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    if !body.is_empty() {
        stream.read_exact(&mut body).await?;
        quickack(stream, quick);
    }
    Ok(body)
}

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(body.len() + 2);
    frame.extend((body.len() as u16).to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await
}

async fn serve(
    sim: &SoftSim,
    stream: &mut TcpStream,
    cancel: &CancellationToken,
    pull_after: Option<u64>,
) -> ServeEnd {
    let mut apdus = 0u64;
    loop {
        let body = tokio::select! {
            _ = cancel.cancelled() => return ServeEnd::Cancelled,
            body = read_frame(stream, sim.quickack) => match body {
                Ok(body) => body,
                Err(_) => return ServeEnd::Disconnected,
            },
        };
        let reply = match body.as_slice() {
            [0x00] => {
                sim.lock().power_off();
                None
            }
            [0x01] | [0x02] => {
                sim.lock().reset();
                None
            }
            [0x04] if sim.faults.mute => Some(OVERLONG_ATR.to_vec()),
            [0x04] => Some(sim.lock().atr().to_vec()),
            [_] => None,
            apdu => {
                let is_update = matches!(apdu.get(1), Some(0xD6) | Some(0xDC));
                if let (true, Some(delay)) = (is_update, sim.faults.update_delay) {
                    tokio::select! {
                        _ = cancel.cancelled() => return ServeEnd::Cancelled,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                apdus += 1;
                let mut card = sim.lock();
                let answer = card.process(apdu);
                let garble = sim.faults.garble_apdu == Some(card.counters().total);
                Some(if garble { answer[..1].to_vec() } else { answer })
            }
        };
        if let Some(reply) = reply
            && write_frame(stream, &reply).await.is_err()
        {
            return ServeEnd::Disconnected;
        }
        if pull_after.is_some_and(|limit| apdus >= limit) {
            return ServeEnd::Pulled;
        }
    }
}
