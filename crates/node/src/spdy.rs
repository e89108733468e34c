//! The part of SPDY/3.1 the kubelet API needs (client-go and kubelet use moby's spdystream):
//! frames, header blocks (zlib with the SPDY/3 dictionary), and a reader that accepts every
//! stream the client opens (SYN_REPLY), answers pings and hands the rest on as [`Event`]s.
//! SETTINGS and WINDOW_UPDATE are read and ignored: spdystream does no flow control.
//!
//! The connection is the upgraded HTTP connection itself (`Upgrade: SPDY/3.1`) or, for
//! port-forward from kubectl 1.31+, tunnelled in binary WebSocket messages ([`transport`]).

use std::collections::HashMap;
use std::io;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::streaming::{frame, read_frame};

pub(crate) const SYN_STREAM: u16 = 1;
pub(crate) const SYN_REPLY: u16 = 2;
pub(crate) const RST_STREAM: u16 = 3;
pub(crate) const PING: u16 = 6;
pub(crate) const GOAWAY: u16 = 7;
pub(crate) const FLAG_FIN: u8 = 0x01;

/// The zlib dictionary of SPDY/3 header blocks (draft 3, section 2.6.10.1), 1423 bytes.
const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
    \x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-char\
    set\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-\
    ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\
    \x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10c\
    ontent-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\
    \x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\
    \x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\
    \x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
    \x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\
    \x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\
    \x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\
    \x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0br\
    etry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\
    \x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04va\
    ry\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\
    \x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200\x20OK\x00\x00\x00\
    \x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\
    \x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230\
    3304305306307402405406407408409410411412413414415416417502504505203\x20Non-Authoritative\
    \x20Information204\x20No\x20Content301\x20Moved\x20Permanently400\x20Bad\x20Request401\
    \x20Unauthorized403\x20Forbidden404\x20Not\x20Found500\x20Internal\x20Server\x20Error501\
    \x20Not\x20Implemented503\x20Service\x20UnavailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Ju\
    n\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\
    \x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/html,image/png,image/jpg,image/gif,applicati\
    on/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflat\
    e,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// What the client did on the connection.
#[derive(Debug)]
pub(crate) enum Event {
    /// A new stream and its headers (names lowercase); it has been accepted.
    Open {
        id: u32,
        headers: HashMap<String, String>,
    },
    /// Bytes on a stream; `fin` half-closes it.
    Data {
        id: u32,
        data: Vec<u8>,
        fin: bool,
    },
    Reset {
        id: u32,
    },
}

pub(crate) fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80, 0x03];
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

pub(crate) fn data(stream: u32, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

pub(crate) fn be32(b: &[u8]) -> u32 {
    b.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads the zlib stream of the client's header blocks, primed with [`DICTIONARY`].
struct Inflater(flate2::Decompress);

impl Inflater {
    fn block(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let bad =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let mut out = Vec::with_capacity(1024);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let (in0, out0) = (self.0.total_in(), self.0.total_out());
            let res = self.0.decompress_vec(&input[pos..], &mut out, flate2::FlushDecompress::Sync);
            pos += usize::try_from(self.0.total_in() - in0).unwrap_or(usize::MAX);
            match res {
                Ok(_) => {
                    let stalled = self.0.total_in() == in0 && self.0.total_out() == out0;
                    if pos >= input.len() && (out.capacity() > out.len() || stalled) {
                        return Ok(out);
                    }
                    if stalled {
                        return Err(bad(&"truncated header block"));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(DICTIONARY).map_err(|e| bad(&e))?;
                }
                Err(e) => return Err(bad(&e)),
            }
        }
    }
}

/// Compresses our header blocks: one zlib stream, each block sync-flushed as Go's writer does.
/// It has no preset dictionary, which zlib readers accept whatever dictionary they hold. (A
/// flush must end each block: Go's reader hands out a stored block's bytes only once it saw
/// the next block's start, and the frame ends there.)
struct Deflater(flate2::Compress);

impl Default for Deflater {
    fn default() -> Self {
        Self(flate2::Compress::new(flate2::Compression::fast(), true))
    }
}

impl Deflater {
    fn block(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.0.total_in();
        loop {
            let done = usize::try_from(self.0.total_in() - start).unwrap_or(raw.len());
            let _ = self.0.compress_vec(&raw[done..], &mut out, flate2::FlushCompress::Sync);
            if out.len() < out.capacity() {
                return out;
            }
            out.reserve(256);
        }
    }
}

/// Name/value pairs of a decompressed SPDY/3 header block.
pub(crate) fn parse_headers(b: &[u8]) -> HashMap<String, String> {
    let mut h = HashMap::new();
    let n = be32(b);
    let mut at = 4usize;
    let take = |at: &mut usize| -> Option<String> {
        let len = usize::try_from(be32(b.get(*at..)?)).ok()?;
        let s = b.get(*at + 4..*at + 4 + len)?;
        *at += 4 + len;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    for _ in 0..n {
        let (Some(k), Some(v)) = (take(&mut at), take(&mut at)) else { break };
        h.insert(k.to_ascii_lowercase(), v);
    }
    h
}

/// Reads frames from `input` until GOAWAY, its end or a broken header block, accepting streams
/// and answering pings through `out`, and passes the rest to `events`.
pub(crate) async fn read(
    mut input: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    let mut inflate = Inflater(flate2::Decompress::new(true));
    let mut deflate = Deflater::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        while buf.len() >= 8 {
            let len = usize::try_from(be32(&buf[4..8]) & 0x00ff_ffff).unwrap_or(usize::MAX);
            if buf.len() < 8 + len {
                break;
            }
            let f: Vec<u8> = buf.drain(..8 + len).collect();
            let (flags, body) = (f[4], &f[8..]);
            let ev = if f[0] & 0x80 == 0 {
                let id = be32(&f) & 0x7fff_ffff;
                Event::Data { id, data: body.to_vec(), fin: flags & FLAG_FIN != 0 }
            } else {
                match u16::from_be_bytes([f[2], f[3]]) {
                    SYN_STREAM if body.len() >= 10 => {
                        let id = be32(body) & 0x7fff_ffff;
                        let headers = match inflate.block(&body[10..]) {
                            Ok(raw) => parse_headers(&raw),
                            Err(e) => {
                                tracing::debug!(error = %e, "unreadable SPDY header block");
                                return;
                            }
                        };
                        let mut reply = id.to_be_bytes().to_vec();
                        reply.extend(deflate.block(&0u32.to_be_bytes()));
                        if out.send(control(SYN_REPLY, 0, &reply)).await.is_err() {
                            return;
                        }
                        Event::Open { id, headers }
                    }
                    RST_STREAM if body.len() >= 4 => Event::Reset { id: be32(body) & 0x7fff_ffff },
                    PING => {
                        if out.send(f.clone()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    GOAWAY => return,
                    _ => continue,
                }
            };
            if events.send(ev).await.is_err() {
                return;
            }
        }
        match input.recv().await {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => return,
        }
    }
}

/// Byte channels over an upgraded connection: what the client sends, and a sender for what to
/// send it. `tunneled`: the bytes travel in binary WebSocket messages. The tasks end with the
/// connection, or once every sender of the second channel is gone.
pub(crate) fn transport(
    io: hyper::upgrade::Upgraded,
    tunneled: bool,
) -> (mpsc::Receiver<Vec<u8>>, mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (mut rd, mut wr) = tokio::io::split(hyper_util::rt::TokioIo::new(io));
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(64);
    let (wire_tx, mut wire_rx) = mpsc::channel::<Vec<u8>>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(b) = wire_rx.recv().await {
            if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let wire = wire_tx.clone();
    let reader = tokio::spawn(async move {
        if tunneled {
            // Each binary message carries the next bytes of the SPDY connection.
            while let Ok(Some((_, op, payload))) = read_frame(&mut rd).await {
                match op {
                    0x8 => break,
                    0x9 => {
                        let _ = wire.send(frame(0xA, &payload)).await;
                    }
                    0x0..=0x2 if in_tx.send(payload).await.is_err() => break,
                    _ => {}
                }
            }
        } else {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 || in_tx.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    });
    let done = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            let b = if tunneled { frame(0x2, &b) } else { b };
            if wire_tx.send(b).await.is_err() {
                break;
            }
        }
        drop(wire_tx);
        reader.abort();
        let _ = writer.await;
    });
    (in_rx, out_tx, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_zlib() {
        // A block as a Go client writes it: zlib with the dictionary, sync-flushed.
        let mut raw = 2u32.to_be_bytes().to_vec();
        for s in ["port", "8080", "streamtype", "data"] {
            raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        let mut z = flate2::Compress::new(flate2::Compression::default(), true);
        z.set_dictionary(DICTIONARY).unwrap();
        let mut block = Vec::with_capacity(1024);
        z.compress_vec(&raw, &mut block, flate2::FlushCompress::Sync).unwrap();
        let mut inflate = Inflater(flate2::Decompress::new(true));
        let h = parse_headers(&inflate.block(&block).unwrap());
        assert_eq!(h.get("port").map(String::as_str), Some("8080"));
        assert_eq!(h.get("streamtype").map(String::as_str), Some("data"));
        // Ours read back with a plain zlib reader.
        let mut d = Deflater::default();
        let mut ours = d.block(&raw);
        ours.extend(d.block(&raw));
        let mut plain = flate2::Decompress::new(true);
        let mut back = Vec::with_capacity(1024);
        plain.decompress_vec(&ours, &mut back, flate2::FlushDecompress::Sync).unwrap();
        assert_eq!(back, [raw.clone(), raw].concat());
    }
}
