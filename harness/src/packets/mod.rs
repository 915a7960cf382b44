//! Crafted packets: Ethernet frames carrying IPv4 or IPv6 and TCP, UDP, ICMP echo or
//! ICMPv6 echo, built byte by byte with correct checksums, then damaged on purpose
//! ([`Corruption`]) — `frame.rs`, pure bytes, no sockets or namespaces — and the
//! AF_PACKET socket that puts them on a host's veth (`socket.rs`). Both are private;
//! this module re-exports what the rest of the harness uses.
//!
//! Why frames and not sockets: a socket never sends a wrong checksum, and on veth the
//! kernel does not even compute one (CHECKSUM_PARTIAL travels with the skb and the
//! receiver trusts it). A frame written to an AF_PACKET socket is CHECKSUM_NONE: the
//! receiving kernel verifies every checksum in software, whatever the offload settings
//! of either veth end (measured on 6.18: `ethtool -K rx/tx off` changes nothing).

mod fragment;
mod frame;
mod socket;

pub use fragment::{build_fragments, Piece};

pub use frame::{
    build, checksum, classify_reply, format_mac, wrong_checksum, FrameSpec, Mac, Reply, Transport,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
pub use socket::{interface_mac, PacketError, PacketSocket};

/// The destination MAC of [`Corruption::DstMac`]: locally administered unicast, and no
/// veth of ours has it (theirs are random, and checked against it at build time).
pub const WRONG_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// How many bytes [`Corruption::Truncated`] cuts off the end of the frame.
pub const TRUNCATED_BY: usize = 4;

// Shared with the scenario model, which may not import the runtime.
pub use crate::vocab::{
    Corruption, TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_names_round_trip() {
        for c in [
            Corruption::None,
            Corruption::IpChecksum,
            Corruption::Checksum,
            Corruption::Ihl,
            Corruption::Version,
            Corruption::Truncated,
            Corruption::DstMac,
        ] {
            assert_eq!(Corruption::parse(c.as_str()), Some(c));
        }
        assert_eq!(Corruption::parse("crc"), None);
        assert_eq!(format_mac(&WRONG_MAC), "02:00:00:00:00:01");
    }
}
