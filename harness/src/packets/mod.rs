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

mod frame;
mod socket;

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

/// TCP flag bits, in header order.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// What is wrong with a frame on purpose. Everything else about it stays correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Corruption {
    None,
    /// The IPv4 header checksum is wrong (IPv6 has none).
    IpChecksum,
    /// The TCP, UDP, ICMP or ICMPv6 checksum is wrong.
    Checksum,
    /// The IPv4 header length field says 4 words (16 bytes), below the minimum of 5.
    Ihl,
    /// The IP version nibble disagrees with the EtherType (6 in an IPv4 header, 4 in an
    /// IPv6 one).
    Version,
    /// The frame ends [`TRUNCATED_BY`] bytes before the length its IP header announces.
    Truncated,
    /// The Ethernet destination is [`WRONG_MAC`], a unicast address of no host.
    DstMac,
}

impl Corruption {
    pub fn as_str(self) -> &'static str {
        match self {
            Corruption::None => "none",
            Corruption::IpChecksum => "ip_checksum",
            Corruption::Checksum => "checksum",
            Corruption::Ihl => "ihl",
            Corruption::Version => "version",
            Corruption::Truncated => "truncated",
            Corruption::DstMac => "dst_mac",
        }
    }

    pub fn parse(text: &str) -> Option<Corruption> {
        Some(match text {
            "none" => Corruption::None,
            "ip_checksum" => Corruption::IpChecksum,
            "checksum" => Corruption::Checksum,
            "ihl" => Corruption::Ihl,
            "version" => Corruption::Version,
            "truncated" => Corruption::Truncated,
            "dst_mac" => Corruption::DstMac,
            _ => return None,
        })
    }
}

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
