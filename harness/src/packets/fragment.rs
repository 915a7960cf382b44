//! A crafted datagram cut into fragments: the datagram is built whole (transport header
//! and payload, its checksum over all of it), then each [`Piece`] carries bytes
//! `offset..offset + length` of it behind its own IP header — IPv4 with the MF flag and
//! fragment offset in the header, IPv6 with a fragment extension header (RFC 8200
//! §4.5). Pieces may overlap, repeat, leave holes or reach past the datagram's end (the
//! bytes there are filler), which is what fragment faults are made of. Pure bytes.

use std::net::IpAddr;

use super::frame::{
    checksum, ipv4_header, ipv6_header, transport_segment, wrong_checksum, FrameSpec,
    ETHERTYPE_IPV4, ETHERTYPE_IPV6,
};
use super::{Corruption, TRUNCATED_BY, WRONG_MAC};

/// The IPv6 next-header number of the fragment header.
const NEXT_HEADER_FRAGMENT: u8 = 44;
/// Filler for bytes beyond the datagram's end.
const FILLER: u8 = 0x5a;

/// One fragment: bytes of the datagram after the IP header, and the MF flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub offset: u32,
    pub length: u32,
    pub more: bool,
}

/// The frames of one datagram, one per piece, in the order given. `identification`
/// ties them together (IPv4 uses its low 16 bits).
pub fn build_fragments(spec: &FrameSpec, pieces: &[Piece], identification: u32) -> Vec<Vec<u8>> {
    let ipv6 = spec.source.is_ipv6();
    let protocol = spec.transport.protocol(ipv6);
    let datagram = transport_segment(spec, protocol);
    pieces
        .iter()
        .map(|piece| {
            let start = piece.offset as usize;
            let data: Vec<u8> = (start..start + piece.length as usize)
                .map(|i| datagram.get(i).copied().unwrap_or(FILLER))
                .collect();
            let mut frame = Vec::with_capacity(14 + 48 + data.len());
            let destination_mac = if spec.corrupt == Corruption::DstMac {
                WRONG_MAC
            } else {
                spec.destination_mac
            };
            frame.extend_from_slice(&destination_mac);
            frame.extend_from_slice(&spec.source_mac);
            let offset_field =
                |more: bool| (piece.offset / 8) as u16 | if more { 0x2000 } else { 0 };
            match (spec.source, spec.destination) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                    let spec = FrameSpec {
                        ident: identification as u16,
                        ..spec.clone()
                    };
                    let mut h = ipv4_header(&spec, s, d, protocol, data.len());
                    // No DF: a fragment; MF and the offset in 8-byte units instead.
                    h[6..8].copy_from_slice(&offset_field(piece.more).to_be_bytes());
                    h[10..12].copy_from_slice(&[0, 0]);
                    let correct = checksum(&h);
                    let stored = if spec.corrupt == Corruption::IpChecksum {
                        wrong_checksum(correct)
                    } else {
                        correct
                    };
                    h[10..12].copy_from_slice(&stored.to_be_bytes());
                    frame.extend_from_slice(&h);
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                    let h = ipv6_header(spec, s, d, NEXT_HEADER_FRAGMENT, 8 + data.len());
                    frame.extend_from_slice(&h);
                    frame.push(protocol);
                    frame.push(0);
                    frame.extend_from_slice(&offset_field(false).wrapping_shl(3).to_be_bytes());
                    if piece.more {
                        *frame.last_mut().expect("just written") |= 1;
                    }
                    frame.extend_from_slice(&identification.to_be_bytes());
                }
                _ => panic!(
                    "frame with mixed address families: {} -> {}",
                    spec.source, spec.destination
                ),
            }
            frame.extend_from_slice(&data);
            if spec.corrupt == Corruption::Truncated {
                frame.truncate(frame.len() - TRUNCATED_BY.min(data.len()));
            }
            frame
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::{build, Transport};

    fn spec(source: &str, destination: &str, payload: usize) -> FrameSpec {
        FrameSpec {
            source_mac: [2, 0xaa, 0, 0, 0, 1],
            destination_mac: [2, 0xbb, 0, 0, 0, 2],
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            ttl: 64,
            ident: 1,
            transport: Transport::Udp {
                source_port: 40000,
                destination_port: 5000,
            },
            payload: vec![0x5a; payload],
            corrupt: Corruption::None,
        }
    }

    #[test]
    fn ipv4_fragments_carry_the_datagram_in_order() {
        let s = spec("198.18.0.1", "198.18.0.2", 100);
        let whole = build(&s);
        let pieces = [
            Piece {
                offset: 0,
                length: 64,
                more: true,
            },
            Piece {
                offset: 64,
                length: 44,
                more: false,
            },
        ];
        let frames = build_fragments(&s, &pieces, 7);
        assert_eq!(frames.len(), 2);
        // First: MF set, offset 0, no DF; second: offset 8 units, no MF.
        assert_eq!(&frames[0][20..22], &[0x20, 0x00]);
        assert_eq!(&frames[1][20..22], &[0x00, 0x08]);
        assert_eq!(&frames[0][18..20], &7u16.to_be_bytes());
        // Header checksums verify (sum of a correct header is 0).
        for f in &frames {
            assert_eq!(checksum(&f[14..34]), 0);
        }
        // The data, concatenated, is the unfragmented datagram's transport part.
        let mut data = frames[0][34..].to_vec();
        data.extend_from_slice(&frames[1][34..]);
        assert_eq!(data, whole[34..]);
        assert_eq!(u16::from_be_bytes([frames[1][16], frames[1][17]]), 20 + 44);
    }

    #[test]
    fn ipv6_fragments_have_a_fragment_header() {
        let s = spec("2001:db8::1", "2001:db8::2", 100);
        let whole = build(&s);
        let pieces = [
            Piece {
                offset: 0,
                length: 56,
                more: true,
            },
            Piece {
                offset: 56,
                length: 52,
                more: false,
            },
        ];
        let frames = build_fragments(&s, &pieces, 0x01020304);
        assert_eq!(frames[0][14 + 6], NEXT_HEADER_FRAGMENT);
        assert_eq!(&frames[0][54..62], &[17, 0, 0x00, 0x01, 1, 2, 3, 4]);
        assert_eq!(&frames[1][54..62], &[17, 0, 0x00, 56, 1, 2, 3, 4]);
        assert_eq!(u16::from_be_bytes([frames[1][18], frames[1][19]]), 8 + 52);
        let mut data = frames[0][62..].to_vec();
        data.extend_from_slice(&frames[1][62..]);
        assert_eq!(data, whole[54..]);
    }

    #[test]
    fn pieces_past_the_end_are_filler() {
        let s = spec("198.18.0.1", "198.18.0.2", 8);
        let frames = build_fragments(
            &s,
            &[Piece {
                offset: 65528,
                length: 16,
                more: false,
            }],
            1,
        );
        assert_eq!(&frames[0][20..22], &[0x1f, 0xff]);
        assert!(frames[0][34..].iter().all(|b| *b == FILLER));
    }
}
