//! Frames built byte by byte: Ethernet, IPv4 or IPv6, then TCP, UDP, ICMP echo or ICMPv6
//! echo (or a bare protocol number), every checksum correct unless a [`Corruption`] says
//! otherwise; and the reading of what comes back. Pure functions on bytes: nothing here
//! opens a socket or knows a namespace, so all of it is tested without root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Corruption, TCP_RST, TRUNCATED_BY, WRONG_MAC};

pub type Mac = [u8; 6];

pub(super) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(super) const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// What follows the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp {
        source_port: u16,
        destination_port: u16,
    },
    Tcp {
        source_port: u16,
        destination_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
    },
    /// ICMP echo request over IPv4, ICMPv6 echo request over IPv6.
    Echo { id: u16, seq: u16 },
    /// No transport header: the payload follows the IP header under this protocol number.
    Other { protocol: u8 },
}

impl Transport {
    /// The IP protocol / next-header number for this transport in `family`.
    pub fn protocol(&self, ipv6: bool) -> u8 {
        match self {
            Transport::Udp { .. } => PROTO_UDP,
            Transport::Tcp { .. } => PROTO_TCP,
            Transport::Echo { .. } if ipv6 => PROTO_ICMPV6,
            Transport::Echo { .. } => PROTO_ICMP,
            Transport::Other { protocol } => *protocol,
        }
    }
}

/// One frame to build. `source` and `destination` must be of the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    pub source_mac: Mac,
    pub destination_mac: Mac,
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 identification (ignored for IPv6).
    pub ident: u16,
    pub transport: Transport,
    pub payload: Vec<u8>,
    pub corrupt: Corruption,
}

/// RFC 1071 Internet checksum of `data`, ready to store (already complemented).
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum_words(0, data))
}

/// Adds `data` as big-endian 16-bit words to `sum` (an odd last byte is padded with 0).
fn sum_words(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for word in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([word[0], word[1]])));
        // Fold early so a long payload can never overflow the accumulator.
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum that TCP, UDP and ICMPv6 checksums start from (RFC 793, RFC
/// 768, RFC 8200 §8.1).
fn pseudo_header_sum(source: IpAddr, destination: IpAddr, protocol: u8, length: usize) -> u32 {
    match (source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut sum = sum_words(0, &s.octets());
            sum = sum_words(sum, &d.octets());
            sum + u32::from(protocol) + length as u32
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut sum = sum_words(0, &s.octets());
            sum = sum_words(sum, &d.octets());
            sum = sum_words(sum, &(length as u32).to_be_bytes());
            sum + u32::from(protocol)
        }
        _ => panic!("pseudo header of mixed families: {source} -> {destination}"),
    }
}

/// A checksum value that is certainly wrong: different from `correct` and from its
/// one's-complement twin (0x0000 and 0xffff both mean zero and both verify), and never
/// 0, which in UDP over IPv4 means "no checksum" and is accepted unverified.
pub fn wrong_checksum(correct: u16) -> u16 {
    let mut bad = correct.wrapping_add(0x0101);
    while bad == 0 || bad == 0xffff || bad == correct {
        bad = bad.wrapping_add(0x0101);
    }
    bad
}

/// Builds the frame: Ethernet header, IP header, transport header, payload, with every
/// checksum correct unless `spec.corrupt` says otherwise.
///
/// Panics if `source` and `destination` are of different families, or if the
/// corruption does not apply (IPv4 header checksum or IHL on IPv6, a transport checksum
/// on [`Transport::Other`]); the scenario validator refuses those combinations.
pub fn build(spec: &FrameSpec) -> Vec<u8> {
    let ipv6 = match (spec.source, spec.destination) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => panic!(
            "frame with mixed address families: {} -> {}",
            spec.source, spec.destination
        ),
    };
    let protocol = spec.transport.protocol(ipv6);
    let transport = transport_segment(spec, protocol);

    let mut frame = Vec::with_capacity(14 + 40 + transport.len());
    let destination_mac = if spec.corrupt == Corruption::DstMac {
        WRONG_MAC
    } else {
        spec.destination_mac
    };
    frame.extend_from_slice(&destination_mac);
    frame.extend_from_slice(&spec.source_mac);
    match (spec.source, spec.destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            frame.extend_from_slice(&ipv4_header(spec, s, d, protocol, transport.len()));
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            frame.extend_from_slice(&ipv6_header(spec, s, d, protocol, transport.len()));
        }
        _ => unreachable!("families checked above"),
    }
    frame.extend_from_slice(&transport);
    if spec.corrupt == Corruption::Truncated {
        frame.truncate(frame.len() - TRUNCATED_BY);
    }
    frame
}

pub(super) fn ipv4_header(
    spec: &FrameSpec,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    transport_len: usize,
) -> [u8; 20] {
    let total = u16::try_from(20 + transport_len).expect("packet fits an IPv4 total length");
    let mut h = [0u8; 20];
    h[0] = match spec.corrupt {
        Corruption::Version => 0x65,
        Corruption::Ihl => 0x44,
        _ => 0x45,
    };
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&spec.ident.to_be_bytes());
    // Don't Fragment, like every TCP and most UDP senders on Linux (PMTU discovery).
    h[6] = 0x40;
    h[8] = spec.ttl;
    h[9] = protocol;
    h[12..16].copy_from_slice(&source.octets());
    h[16..20].copy_from_slice(&destination.octets());
    // The checksum covers the header as written, bad version or IHL included, so that
    // those frames fail on the field they are about and not on their checksum.
    let correct = checksum(&h);
    let stored = if spec.corrupt == Corruption::IpChecksum {
        wrong_checksum(correct)
    } else {
        correct
    };
    h[10..12].copy_from_slice(&stored.to_be_bytes());
    h
}

pub(super) fn ipv6_header(
    spec: &FrameSpec,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    protocol: u8,
    transport_len: usize,
) -> [u8; 40] {
    assert!(
        !matches!(spec.corrupt, Corruption::IpChecksum | Corruption::Ihl),
        "IPv6 has no header checksum and no header length field"
    );
    let length = u16::try_from(transport_len).expect("payload fits an IPv6 payload length");
    let mut h = [0u8; 40];
    h[0] = if spec.corrupt == Corruption::Version {
        0x40
    } else {
        0x60
    };
    h[4..6].copy_from_slice(&length.to_be_bytes());
    h[6] = protocol;
    h[7] = spec.ttl;
    h[8..24].copy_from_slice(&source.octets());
    h[24..40].copy_from_slice(&destination.octets());
    h
}

/// The transport header and payload, with its checksum.
pub(super) fn transport_segment(spec: &FrameSpec, protocol: u8) -> Vec<u8> {
    let ipv6 = spec.source.is_ipv6();
    let (mut segment, checksum_at) = match spec.transport {
        Transport::Udp {
            source_port,
            destination_port,
        } => {
            let length = u16::try_from(8 + spec.payload.len()).expect("UDP length fits");
            let mut s = Vec::with_capacity(8 + spec.payload.len());
            s.extend_from_slice(&source_port.to_be_bytes());
            s.extend_from_slice(&destination_port.to_be_bytes());
            s.extend_from_slice(&length.to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            (s, Some(6))
        }
        Transport::Tcp {
            source_port,
            destination_port,
            seq,
            ack,
            flags,
            window,
        } => {
            let mut s = Vec::with_capacity(20 + spec.payload.len());
            s.extend_from_slice(&source_port.to_be_bytes());
            s.extend_from_slice(&destination_port.to_be_bytes());
            s.extend_from_slice(&seq.to_be_bytes());
            s.extend_from_slice(&ack.to_be_bytes());
            s.push(5 << 4); // data offset: 5 words, no options
            s.push(flags);
            s.extend_from_slice(&window.to_be_bytes());
            s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            (s, Some(16))
        }
        Transport::Echo { id, seq } => {
            let kind = if ipv6 { 128 } else { 8 };
            let mut s = vec![kind, 0, 0, 0];
            s.extend_from_slice(&id.to_be_bytes());
            s.extend_from_slice(&seq.to_be_bytes());
            (s, Some(2))
        }
        Transport::Other { .. } => {
            assert!(
                spec.corrupt != Corruption::Checksum,
                "protocol {protocol} has no checksum dropspec knows how to corrupt"
            );
            (Vec::with_capacity(spec.payload.len()), None)
        }
    };
    segment.extend_from_slice(&spec.payload);
    if let Some(at) = checksum_at {
        // ICMP over IPv4 is the one checksum without a pseudo header.
        let start = if protocol == PROTO_ICMP {
            0
        } else {
            pseudo_header_sum(spec.source, spec.destination, protocol, segment.len())
        };
        let mut correct = fold(sum_words(start, &segment));
        // UDP sends a computed 0 as 0xffff: 0 means "no checksum" (RFC 768), and over
        // IPv6 a zero UDP checksum is invalid (RFC 8200).
        if protocol == PROTO_UDP && correct == 0 {
            correct = 0xffff;
        }
        let stored = if spec.corrupt == Corruption::Checksum {
            wrong_checksum(correct)
        } else {
            correct
        };
        segment[at..at + 2].copy_from_slice(&stored.to_be_bytes());
    }
    segment
}

/// What a frame seen coming back to the sender says about the packets it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// ICMP or ICMPv6 echo reply with this identifier.
    EchoReply { id: u16 },
    /// ICMP destination unreachable, time exceeded or parameter problem (and their
    /// ICMPv6 counterparts, plus packet too big).
    IcmpError { kind: u8, code: u8 },
    /// A TCP segment with RST set.
    TcpReset,
    /// Anything else from the peer (TCP ACKs, for instance).
    Other,
}

/// Classifies a frame received on the sender's interface, or `None` when it is not an
/// IP packet for `us` about the packets sent to `peer`: a reply from `peer`, or an ICMP
/// or ICMPv6 error from any host (a router on the way, say) that quotes a packet from
/// `us` to `peer`. A non-first fragment carries no transport header and is `Other`.
pub fn classify_reply(frame: &[u8], us: IpAddr, peer: IpAddr) -> Option<Reply> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let ip = frame.get(14..)?;
    let (source, destination, mut protocol, mut transport, first) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            let offset = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?) & 0x1fff;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                *ip.get(9)?,
                ip.get(ihl..)?,
                offset == 0,
            )
        }
        ETHERTYPE_IPV6 => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                *ip.get(6)?,
                ip.get(40..)?,
                true,
            )
        }
        _ => return None,
    };
    let mut first = first;
    if ethertype == ETHERTYPE_IPV6 && protocol == IPV6_FRAGMENT_HEADER {
        // A fragmented answer (an echo reply to a large request): look past the header.
        first = u16::from_be_bytes(transport.get(2..4)?.try_into().ok()?) & 0xfff8 == 0;
        protocol = *transport.first()?;
        transport = transport.get(8..)?;
    }
    if destination != us {
        return None;
    }
    if !first {
        return (source == peer).then_some(Reply::Other);
    }
    let error = match protocol {
        PROTO_ICMP => match (*transport.first()?, *transport.get(1)?) {
            (kind @ (3 | 11 | 12), code) => Some(Reply::IcmpError { kind, code }),
            _ => None,
        },
        PROTO_ICMPV6 => match (*transport.first()?, *transport.get(1)?) {
            (kind @ 1..=4, code) => Some(Reply::IcmpError { kind, code }),
            _ => None,
        },
        _ => None,
    };
    if source != peer {
        // Only an error about our packets counts from a third host.
        let quoted = transport.get(8..)?;
        let (s, d): (IpAddr, IpAddr) = if ethertype == ETHERTYPE_IPV4 {
            let s: [u8; 4] = quoted.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = quoted.get(16..20)?.try_into().ok()?;
            (s.into(), d.into())
        } else {
            let s: [u8; 16] = quoted.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = quoted.get(24..40)?.try_into().ok()?;
            (s.into(), d.into())
        };
        return error.filter(|_| (s, d) == (us, peer));
    }
    if let Some(error) = error {
        return Some(error);
    }
    Some(match protocol {
        PROTO_ICMP => match *transport.first()? {
            0 => Reply::EchoReply {
                id: u16::from_be_bytes(transport.get(4..6)?.try_into().ok()?),
            },
            _ => Reply::Other,
        },
        PROTO_ICMPV6 => match *transport.first()? {
            129 => Reply::EchoReply {
                id: u16::from_be_bytes(transport.get(4..6)?.try_into().ok()?),
            },
            _ => Reply::Other,
        },
        PROTO_TCP if transport.get(13)? & TCP_RST != 0 => Reply::TcpReset,
        _ => Reply::Other,
    })
}

/// The IPv6 next-header number of a fragment header.
const IPV6_FRAGMENT_HEADER: u8 = 44;

/// `02:00:00:00:00:01`, for reports and error messages.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::{TCP_ACK, TCP_PSH};

    const CLIENT_MAC: Mac = [0x02, 0xaa, 0, 0, 0, 1];
    const SERVER_MAC: Mac = [0x02, 0xbb, 0, 0, 0, 2];

    fn v4(transport: Transport, payload: usize, corrupt: Corruption) -> FrameSpec {
        FrameSpec {
            source_mac: CLIENT_MAC,
            destination_mac: SERVER_MAC,
            source: "198.18.0.1".parse().unwrap(),
            destination: "198.18.0.2".parse().unwrap(),
            ttl: 64,
            ident: 1,
            transport,
            payload: vec![0x5a; payload],
            corrupt,
        }
    }

    fn v6(transport: Transport, payload: usize, corrupt: Corruption) -> FrameSpec {
        FrameSpec {
            source: "2001:db8::1".parse().unwrap(),
            destination: "2001:db8::2".parse().unwrap(),
            ..v4(transport, payload, corrupt)
        }
    }

    const UDP: Transport = Transport::Udp {
        source_port: 40000,
        destination_port: 5000,
    };
    const TCP: Transport = Transport::Tcp {
        source_port: 40000,
        destination_port: 5000,
        seq: 1_000_000,
        ack: 2_000_000,
        flags: TCP_PSH | TCP_ACK,
        window: 65535,
    };
    const ECHO: Transport = Transport::Echo { id: 4242, seq: 1 };

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum (with end-around carry) to
        // ddf2, so the checksum is its complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // An odd length is padded with a zero byte.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn a_known_ipv4_header_checksum() {
        // The classic worked example (Wikipedia, "IPv4 header checksum"):
        // 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
    }

    /// Frames the kernel itself sent: an ICMP ping socket in one namespace sending
    /// "dropspec known-good echo" (identifier 4242, sequence 1) to the other, captured
    /// with an AF_PACKET socket on the receiving veth. The kernel computes ICMP and IPv4
    /// header checksums in software, so these are checksums Linux wrote.
    const KERNEL_ECHO_V4: &str = "0e999e2926966a0770daa999080045000034c87640004001e62ac6120001c6120002080065a31092000164726f7073706563206b6e6f776e2d676f6f64206563686f";
    const KERNEL_ECHO_V6: &str = "0e999e2926966a0770daa99986dd600bdf6b00203a4020010db800000000000000000000000120010db8000000000000000000000002800091d31092000164726f7073706563206b6e6f776e2d676f6f64206563686f";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn echo_requests_match_what_the_kernel_sent_byte_for_byte() {
        let captured = hex(KERNEL_ECHO_V4);
        let spec = FrameSpec {
            destination_mac: captured[0..6].try_into().unwrap(),
            source_mac: captured[6..12].try_into().unwrap(),
            ident: 0xc876,
            payload: b"dropspec known-good echo".to_vec(),
            ..v4(ECHO, 0, Corruption::None)
        };
        assert_eq!(build(&spec), captured);

        let mut captured = hex(KERNEL_ECHO_V6);
        // The kernel put a flow label in; dropspec sends 0. No checksum covers it.
        captured[15] &= 0xf0;
        captured[16] = 0;
        captured[17] = 0;
        let spec = FrameSpec {
            destination_mac: captured[0..6].try_into().unwrap(),
            source_mac: captured[6..12].try_into().unwrap(),
            payload: b"dropspec known-good echo".to_vec(),
            ..v6(ECHO, 0, Corruption::None)
        };
        assert_eq!(build(&spec), captured);
    }

    /// Parses a frame with etherparse, an independent implementation, and has it verify
    /// every checksum.
    fn independent_checksums_ok(frame: &[u8]) -> (bool, bool) {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let packet = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
        let (ip_ok, source, destination) = match packet.net.as_ref().expect("an IP layer") {
            NetSlice::Ipv4(ip) => {
                let header = ip.header().to_header();
                (
                    header.calc_header_checksum() == header.header_checksum,
                    IpAddr::V4(header.source.into()),
                    IpAddr::V4(header.destination.into()),
                )
            }
            NetSlice::Ipv6(ip) => (
                true,
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
            ),
            NetSlice::Arp(_) => panic!("not an IP frame"),
        };
        let l4_ok = match packet.transport.expect("a transport layer") {
            TransportSlice::Udp(udp) => {
                let header = udp.to_header();
                let expected = match (source, destination) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => header
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), udp.payload())
                        .unwrap(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => header
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), udp.payload())
                        .unwrap(),
                    _ => unreachable!(),
                };
                expected == header.checksum
            }
            TransportSlice::Tcp(tcp) => {
                let header = tcp.to_header();
                let expected = match (source, destination) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => header
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), tcp.payload())
                        .unwrap(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => header
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), tcp.payload())
                        .unwrap(),
                    _ => unreachable!(),
                };
                expected == header.checksum
            }
            TransportSlice::Icmpv4(icmp) => {
                let header = icmp.header();
                header.icmp_type.calc_checksum(icmp.payload()) == header.checksum
            }
            TransportSlice::Icmpv6(icmp) => {
                let header = icmp.header();
                let (IpAddr::V6(s), IpAddr::V6(d)) = (source, destination) else {
                    unreachable!()
                };
                header
                    .icmp_type
                    .calc_checksum(s.octets(), d.octets(), icmp.payload())
                    .unwrap()
                    == header.checksum
            }
        };
        (ip_ok, l4_ok)
    }

    #[test]
    fn correct_frames_verify_with_an_independent_implementation() {
        for transport in [UDP, TCP, ECHO] {
            for payload in [0, 1, 32, 33, 200, 1400] {
                let frame = build(&v4(transport, payload, Corruption::None));
                assert_eq!(
                    independent_checksums_ok(&frame),
                    (true, true),
                    "v4 {transport:?} payload {payload}"
                );
                let frame = build(&v6(transport, payload, Corruption::None));
                assert_eq!(
                    independent_checksums_ok(&frame),
                    (true, true),
                    "v6 {transport:?} payload {payload}"
                );
            }
        }
    }

    #[test]
    fn corrupted_checksums_fail_the_independent_check_and_nothing_else() {
        for transport in [UDP, TCP, ECHO] {
            for payload in [0, 33, 200] {
                let frame = build(&v4(transport, payload, Corruption::Checksum));
                assert_eq!(independent_checksums_ok(&frame), (true, false));
                let frame = build(&v6(transport, payload, Corruption::Checksum));
                assert_eq!(independent_checksums_ok(&frame), (true, false));
                let frame = build(&v4(transport, payload, Corruption::IpChecksum));
                assert_eq!(independent_checksums_ok(&frame), (false, true));
            }
        }
    }

    #[test]
    fn wrong_checksums_are_never_a_twin_of_the_right_one_or_zero() {
        for correct in [0u16, 1, 0x5a5a, 0xfefe, 0xfeff, 0xffff, 0x1234] {
            let bad = wrong_checksum(correct);
            assert_ne!(bad, correct);
            assert_ne!(bad, 0);
            assert_ne!(bad, 0xffff);
        }
    }

    #[test]
    fn frame_layout_for_each_family() {
        let frame = build(&v4(UDP, 32, Corruption::None));
        assert_eq!(frame.len(), 14 + 20 + 8 + 32);
        assert_eq!(&frame[0..6], &SERVER_MAC);
        assert_eq!(&frame[6..12], &CLIENT_MAC);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(frame[14], 0x45);
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 60);
        assert_eq!(frame[22], 64); // TTL
        assert_eq!(frame[23], PROTO_UDP);
        let frame = build(&v6(ECHO, 10, Corruption::None));
        assert_eq!(frame.len(), 14 + 40 + 8 + 10);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(frame[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([frame[18], frame[19]]), 18);
        assert_eq!(frame[20], PROTO_ICMPV6);
        assert_eq!(frame[54], 128); // echo request
        let frame = build(&v4(
            Transport::Other { protocol: 253 },
            12,
            Corruption::None,
        ));
        assert_eq!(frame.len(), 14 + 20 + 12);
        assert_eq!(frame[23], 253);
        assert!(independent_checksums_ok_ip_only(&frame));
    }

    fn independent_checksums_ok_ip_only(frame: &[u8]) -> bool {
        let header = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..])
            .unwrap()
            .to_header();
        header.calc_header_checksum() == header.header_checksum
    }

    #[test]
    fn header_corruptions_touch_only_their_field() {
        let good = build(&v4(UDP, 32, Corruption::None));
        let ihl = build(&v4(UDP, 32, Corruption::Ihl));
        assert_eq!(ihl[14], 0x44);
        // The header checksum is right for the header as sent.
        assert_eq!(checksum(&ihl[14..34]), 0);
        assert_eq!(&ihl[34..], &good[34..]);
        let version = build(&v4(UDP, 32, Corruption::Version));
        assert_eq!(version[14], 0x65);
        assert_eq!(checksum(&version[14..34]), 0);
        let version6 = build(&v6(UDP, 32, Corruption::Version));
        assert_eq!(version6[14] >> 4, 4);
        let truncated = build(&v4(UDP, 32, Corruption::Truncated));
        assert_eq!(truncated.len(), good.len() - TRUNCATED_BY);
        assert_eq!(&truncated[..], &good[..good.len() - TRUNCATED_BY]);
        let wrong_mac = build(&v4(UDP, 32, Corruption::DstMac));
        assert_eq!(&wrong_mac[0..6], &WRONG_MAC);
        assert_eq!(&wrong_mac[6..], &good[6..]);
    }

    #[test]
    fn replies_are_classified() {
        let us: IpAddr = "198.18.0.1".parse().unwrap();
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        // A frame the peer sends us: build it from the peer's side.
        let from_peer = |transport, payload| {
            let mut spec = v4(transport, payload, Corruption::None);
            std::mem::swap(&mut spec.source, &mut spec.destination);
            spec
        };
        let mut reply = build(&from_peer(ECHO, 8));
        reply[34] = 0; // echo reply
        assert_eq!(
            classify_reply(&reply, us, peer),
            Some(Reply::EchoReply { id: 4242 })
        );
        let mut unreachable = build(&from_peer(ECHO, 28));
        unreachable[34] = 3;
        unreachable[35] = 3;
        assert_eq!(
            classify_reply(&unreachable, us, peer),
            Some(Reply::IcmpError { kind: 3, code: 3 })
        );
        let mut reset = from_peer(TCP, 0);
        reset.transport = Transport::Tcp {
            source_port: 5000,
            destination_port: 40000,
            seq: 0,
            ack: 1,
            flags: TCP_RST | TCP_ACK,
            window: 0,
        };
        assert_eq!(
            classify_reply(&build(&reset), us, peer),
            Some(Reply::TcpReset)
        );
        // Our own frame, seen the other way round, is not a reply.
        assert_eq!(
            classify_reply(&build(&v4(UDP, 4, Corruption::None)), us, peer),
            None
        );
        let mut v6_unreachable = v6(ECHO, 48, Corruption::None);
        std::mem::swap(&mut v6_unreachable.source, &mut v6_unreachable.destination);
        let mut frame = build(&v6_unreachable);
        frame[54] = 1;
        frame[55] = 4;
        assert_eq!(
            classify_reply(
                &frame,
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap()
            ),
            Some(Reply::IcmpError { kind: 1, code: 4 })
        );
        assert_eq!(classify_reply(&[0u8; 10], us, peer), None);
    }

    #[test]
    fn errors_from_a_router_count_when_they_quote_our_packet() {
        let us: IpAddr = "198.18.0.1".parse().unwrap();
        let far: IpAddr = "198.19.0.2".parse().unwrap();
        let router: IpAddr = "198.18.0.2".parse().unwrap();
        let ours = build(&FrameSpec {
            destination: far,
            ..v4(UDP, 4, Corruption::None)
        });
        // Time exceeded from the router: ICMP header, then our IP header and 8 bytes.
        let mut error = v4(
            Transport::Other {
                protocol: PROTO_ICMP,
            },
            8 + 28,
            Corruption::None,
        );
        (error.source, error.destination) = (router, us);
        let mut frame = build(&error);
        frame[34] = 11;
        frame[35] = 0;
        frame[42..70].copy_from_slice(&ours[14..42]);
        assert_eq!(
            classify_reply(&frame, us, far),
            Some(Reply::IcmpError { kind: 11, code: 0 })
        );
        // The same error about someone else's packet is not ours.
        assert_eq!(
            classify_reply(&frame, us, "198.19.0.3".parse().unwrap()),
            None
        );
    }
}
