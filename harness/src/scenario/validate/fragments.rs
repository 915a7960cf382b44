//! How big a crafted datagram may be and how it is cut: `payload` up to the protocol's
//! real limit, `fragment_size` (+ `fragments_sent`) or a written-out `fragments` list.
//!
//! Where the limits come from: an unfragmented packet must fit the link's MTU (an
//! AF_PACKET send larger than the sender's MTU fails with EMSGSIZE, and veth drops a
//! frame larger than the receiver's MTU); a fragmented datagram is at most 65,535 bytes
//! with its IPv4 header (the total length field), or 65,535 after the fixed IPv6 header
//! (the payload length field), and each fragment must fit the MTU itself.

use super::super::model::{Fragment, PacketProtocol};
use super::super::raw::{self, Spanned};
use super::super::ScenarioError;
use super::{grouped, Validator};

/// Veth's MTU unless the link sets one.
const DEFAULT_MTU: u32 = 1500;
/// The largest fragment offset: 13 bits of 8-byte units.
const MAX_OFFSET: u32 = 0x1fff * 8;
/// Frames one entry may send (datagrams × fragments): bounded like `count`.
pub(super) const MAX_FRAMES: u64 = 100_000;
/// Bytes a TCP entry with a receiver holds as sent-not-acknowledged (payload × count).
const MAX_TCP_BYTES: usize = 14_000_000;
/// The IPv6 fragment header.
const FRAGMENT_HEADER: u32 = 8;

/// Bytes of the transport header dropspec writes in front of the payload.
pub(super) fn transport_header(protocol: PacketProtocol) -> usize {
    match protocol {
        PacketProtocol::Udp | PacketProtocol::Echo => 8,
        PacketProtocol::Tcp => 20,
        PacketProtocol::Other(_) => 0,
    }
}

impl Validator<'_> {
    /// Checks `payload` against the link and the protocol, and turns the fragment keys
    /// into the list of fragments each datagram is sent as (empty: unfragmented).
    pub(super) fn fragments(
        &self,
        spec: &raw::Packets,
        ipv6: bool,
        protocol: PacketProtocol,
        tcp_receiver: bool,
        payload: usize,
        mtu: Option<u32>,
    ) -> Result<Vec<Fragment>, ScenarioError> {
        // Already checked by the caller.
        let count = spec.count.as_ref().map_or(1, |c| *c.get_ref());
        let mtu = mtu.unwrap_or(DEFAULT_MTU);
        let header = if ipv6 { 40 } else { 20 };
        let transport = transport_header(protocol);
        let family = if ipv6 { "IPv6" } else { "IPv4" };
        let name = protocol.name(ipv6);
        let payload_span = || {
            spec.payload
                .as_ref()
                .map_or(spec.from.span(), Spanned::span)
        };
        // 65,535: the IPv4 total length counts its header, the IPv6 payload length not.
        let max_payload = 65_535 - if ipv6 { 0 } else { header } - transport;
        if payload > max_payload {
            return Err(self.at.error(
                payload_span(),
                format!(
                    "`payload` must be at most {} for {name} over {family} (65,535 bytes less the headers), not {}",
                    grouped(max_payload as u64),
                    grouped(payload as u64)
                ),
            ));
        }
        if tcp_receiver && payload * count as usize > MAX_TCP_BYTES {
            return Err(self.at.error(
                payload_span(),
                format!(
                    "`payload` × `count` is {} bytes, which the sender's end of the connection holds as unacknowledged: keep it at most {}",
                    grouped((payload * count as usize) as u64),
                    grouped(MAX_TCP_BYTES as u64)
                ),
            ));
        }
        let datagram = (transport + payload) as u32;
        let frame_room = mtu.saturating_sub(header as u32 + if ipv6 { FRAGMENT_HEADER } else { 0 });
        let fragments = match (&spec.fragment_size, &spec.fragments) {
            (Some(_), Some(list)) => {
                return Err(self.at.error(
                    list.span(),
                    "give `fragment_size` (even pieces) or `fragments` (written out), not both",
                ));
            }
            (None, None) => {
                if let Some(sent) = &spec.fragments_sent {
                    return Err(self.at.error(
                        sent.span(),
                        "`fragments_sent` picks among the pieces of `fragment_size`: set `fragment_size` too",
                    ));
                }
                let fits = (mtu as usize).saturating_sub(header + transport);
                if payload > fits {
                    return Err(self.at.error(
                        payload_span(),
                        format!(
                            "a payload of {} makes a {}-byte {family} packet, over the link's MTU of {mtu}: one unfragmented {name} packet carries at most {} bytes here; set `fragment_size` to send it in fragments (up to {} bytes)",
                            grouped(payload as u64),
                            grouped((header + transport + payload) as u64),
                            grouped(fits as u64),
                            grouped(max_payload as u64)
                        ),
                    ));
                }
                return Ok(Vec::new());
            }
            (Some(size), None) => {
                let n = *size.get_ref();
                if n == 0 || n % 8 != 0 || n > frame_room {
                    return Err(self.at.error(
                        size.span(),
                        format!(
                            "`fragment_size` must be a multiple of 8 from 8 to {} (the link's MTU of {mtu} less the {family} header{}), not {n}",
                            frame_room / 8 * 8,
                            if ipv6 { " and the fragment header" } else { "" }
                        ),
                    ));
                }
                let pieces: Vec<Fragment> = (0..datagram.div_ceil(n).max(1))
                    .map(|i| {
                        let offset = i * n;
                        let length = n.min(datagram - offset);
                        Fragment {
                            offset,
                            length,
                            more: offset + length < datagram,
                        }
                    })
                    .collect();
                match &spec.fragments_sent {
                    None => pieces,
                    Some(sent) if sent.get_ref().is_empty() => {
                        return Err(self.at.error(
                            sent.span(),
                            "`fragments_sent` is empty: list at least one fragment (from 0)",
                        ));
                    }
                    Some(sent) => {
                        let mut chosen = Vec::new();
                        for &i in sent.get_ref() {
                            let piece = pieces.get(i as usize).ok_or_else(|| {
                                self.at.error(
                                    sent.span(),
                                    format!(
                                        "`fragments_sent` names fragment {i}, but {} bytes in pieces of {n} make {} fragments (0 to {})",
                                        datagram,
                                        pieces.len(),
                                        pieces.len() - 1
                                    ),
                                )
                            })?;
                            chosen.push(*piece);
                        }
                        chosen
                    }
                }
            }
            (None, Some(list)) => {
                if let Some(sent) = &spec.fragments_sent {
                    return Err(self.at.error(
                        sent.span(),
                        "`fragments_sent` picks among the pieces of `fragment_size`; with `fragments`, list only the fragments to send",
                    ));
                }
                if list.get_ref().is_empty() {
                    return Err(self
                        .at
                        .error(list.span(), "`fragments` is empty: list at least one"));
                }
                let mut written = Vec::new();
                for (i, f) in list.get_ref().iter().enumerate() {
                    let problem = if f.offset % 8 != 0 || f.offset > MAX_OFFSET {
                        Some(format!(
                            "offset {} is not a multiple of 8 from 0 to {} (13 bits of 8-byte units)",
                            f.offset,
                            grouped(MAX_OFFSET.into())
                        ))
                    } else if f.length > frame_room {
                        Some(format!(
                            "length {} does not fit one frame: at most {frame_room} bytes on the link's MTU of {mtu}",
                            f.length
                        ))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        return Err(self.at.error(
                            list.span(),
                            format!("fragment {i} of `fragments`: {problem}"),
                        ));
                    }
                    written.push(Fragment {
                        offset: f.offset,
                        length: f.length,
                        more: f.more.unwrap_or(f.offset + f.length < datagram),
                    });
                }
                written
            }
        };
        let frames = u64::from(count) * fragments.len() as u64;
        if frames > MAX_FRAMES {
            return Err(self.at.error(
                spec.count.as_ref().map_or(spec.from.span(), Spanned::span),
                format!(
                    "{} datagrams of {} fragments are {} frames: keep `count` × fragments at most {}",
                    count,
                    fragments.len(),
                    grouped(frames),
                    grouped(MAX_FRAMES)
                ),
            ));
        }
        Ok(fragments)
    }
}
