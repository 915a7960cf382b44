//! What serde reads; kept apart so the validated model carries no spans.
//!
//! Every value a person may get wrong is `Spanned`, so the validator can point at it.

use serde::Deserialize;
use std::collections::BTreeMap;

pub type Spanned<T> = toml::Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub description: String,
    #[serde(default)]
    pub hosts: BTreeMap<Spanned<String>, Host>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub traffic: Vec<Traffic>,
    #[serde(default)]
    pub packets: Vec<Packets>,
    #[serde(default)]
    pub expect: Expect,
    pub settle_ms: Option<Spanned<u64>>,
    #[serde(default)]
    pub global_sysctls: BTreeMap<Spanned<String>, Spanned<SysctlValue>>,
    #[serde(default)]
    pub programs: Vec<Program>,
}

/// `[[programs]]`: an eBPF program under test, attached to one interface of a host.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    pub host: Spanned<String>,
    pub interface: Spanned<String>,
    pub attach: Spanned<String>,
    pub object: Spanned<String>,
    pub program: Spanned<String>,
    #[serde(default)]
    pub prefill: Vec<Prefill>,
    pub metrics: Option<Spanned<Metrics>>,
    pub events: Option<Spanned<Events>>,
    /// The program's own drop codes, named: `{ 133 = "DROP_POLICY" }`.
    #[serde(default)]
    pub reasons: BTreeMap<Spanned<String>, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefill {
    pub map: Spanned<String>,
    pub key: Spanned<MapBytes>,
    pub value: Spanned<MapBytes>,
}

/// A map key or value: `"0x07000000"` (bytes in order), `{ u32 = 7 }`, or a list of
/// such fields laid out one after the other in the host's byte order.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum MapBytes {
    Hex(String),
    Field(MapField),
    Fields(Vec<MapField>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapField {
    pub u8: Option<u8>,
    pub u16: Option<u16>,
    pub u32: Option<u32>,
    pub u64: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub map: String,
    pub kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub map: String,
    pub kind: String,
    pub type_offset: u32,
    pub type_value: u8,
    pub reason_offset: u32,
    pub reason_size: u32,
    pub packet_offset: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Host {
    #[serde(default)]
    pub forwarding: bool,
    #[serde(default)]
    pub sysctls: BTreeMap<Spanned<String>, SysctlValue>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum SysctlValue {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub to: Spanned<String>,
    pub via: Option<Spanned<String>>,
    pub dev: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub a: Endpoint,
    pub b: Endpoint,
    pub mtu: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: Spanned<String>,
    pub addr: Spanned<String>,
    pub addr6: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub host: Spanned<String>,
    pub iptables: Option<String>,
    pub iptables_file: Option<Spanned<String>>,
    pub backend: Option<Spanned<String>>,
    pub nft: Option<String>,
    pub nft_file: Option<Spanned<String>>,
    pub tc: Option<String>,
    pub tc_drop: Option<Spanned<TcDrop>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcDrop {
    pub dev: String,
    pub direction: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub protocol: Spanned<String>,
    pub port: Option<Spanned<u16>>,
    pub count: Option<Spanned<u32>>,
    pub listen: Option<bool>,
    pub payload: Option<Spanned<usize>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub source: Option<Spanned<String>>,
    pub ttl: Option<Spanned<u8>>,
    pub dont_fragment: Option<bool>,
    pub receiver: Option<Spanned<String>>,
    pub rcvbuf: Option<u32>,
    pub backlog: Option<Spanned<u32>>,
    pub hold: Option<Spanned<bool>>,
    pub accept_until_empty: Option<Spanned<bool>>,
    pub expect: Option<Spanned<TrafficExpect>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficExpect {
    pub answered: Option<u32>,
    pub delivered: Option<u32>,
    pub errors: Option<u32>,
    pub connected: Option<u32>,
    pub refused: Option<u32>,
    pub timed_out: Option<u32>,
    pub unreachable: Option<u32>,
    pub blocked: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub drops: Vec<DropExpect>,
    #[serde(default)]
    pub allow_other_drops: bool,
    pub since_kernel: Option<Spanned<String>>,
    #[serde(default)]
    pub causes: Vec<CauseExpect>,
    #[serde(default)]
    pub counters: Vec<CounterExpect>,
    #[serde(default)]
    pub hooks: Vec<HookExpect>,
    #[serde(default)]
    pub datapath: Vec<DatapathExpect>,
}

/// `[[expect.datapath]]`: drops of a program under test (all of them without `program`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathExpect {
    pub program: Option<Spanned<String>>,
    pub unreported_drops: Option<u64>,
    pub kernel_drops: Option<u64>,
    pub reported_drops: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookExpect {
    pub host: Spanned<String>,
    pub hook: Spanned<String>,
    pub ret: Option<i32>,
    pub count: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CauseExpect {
    pub host: Spanned<String>,
    pub cause: Spanned<String>,
    pub count: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterExpect {
    pub host: Spanned<String>,
    pub counter: Spanned<String>,
    pub delta: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropExpect {
    pub host: Spanned<String>,
    pub reason: Spanned<String>,
    pub function: Option<Spanned<String>>,
    pub count: u64,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packets {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub ip: Option<Spanned<u32>>,
    pub source: Option<Spanned<String>>,
    pub destination: Option<Spanned<String>>,
    pub protocol: Spanned<ProtocolField>,
    pub port: Option<Spanned<u16>>,
    pub source_port: Option<Spanned<u16>>,
    pub count: Option<Spanned<u32>>,
    pub payload: Option<Spanned<usize>>,
    pub ttl: Option<Spanned<u32>>,
    pub tcp_flags: Option<Spanned<String>>,
    pub corrupt: Option<Spanned<String>>,
    pub receiver: Option<Spanned<String>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub expect: Option<Spanned<PacketExpect>>,
}

/// `protocol = "udp"` or `protocol = 253`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ProtocolField {
    Name(String),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketExpect {
    pub delivered: Option<u32>,
    pub answered: Option<u32>,
    pub errors: Option<u32>,
    pub resets: Option<u32>,
}
