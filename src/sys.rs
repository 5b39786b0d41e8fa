//! Thin Linux system layer: AF_PACKET sockets bound to one interface (layer 2 announcer and
//! probe tool), TCP-MD5 signatures for BGP sessions (RFC 2385), a minimal rtnetlink client
//! (link and address dumps, link/address change notifications) and a network namespace
//! switch for tests.
//!
//! This is the only module of the crate allowed to use `unsafe` (the crate denies it): raw
//! `setsockopt`/`bind`/`setns` calls that neither `socket2` nor `std` wrap. Every `unsafe` block
//! carries a SAFETY comment. Everything that parses bytes coming from the kernel (netlink
//! messages) is safe code in pure functions (`parse_links`, `parse_addrs`) that are
//! unit-tested with hand-built messages and never panic on short or garbled input.
//!
//! Why a hand-written netlink client instead of `rtnetlink`: the announcer needs exactly two
//! dumps (`RTM_GETLINK`, `RTM_GETADDR`) and a "something changed" notification socket; that is
//! ~200 lines with no async runtime coupling, and sockets are created on the calling thread,
//! which matters when a test thread has entered another network namespace (see
//! [`enter_netns`]).
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::Context as _;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use crate::l2::packet::MacAddr;

/// EtherType of ARP (`ETH_P_ARP`).
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv6 (`ETH_P_IPV6`).
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Every protocol (`ETH_P_ALL`), for capture sockets.
pub const ETH_P_ALL: u16 = 0x0003;

/// `IFF_UP`.
pub const IFF_UP: u32 = 0x1;
/// `IFF_BROADCAST`.
pub const IFF_BROADCAST: u32 = 0x2;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 0x8;
/// `IFF_NOARP`.
pub const IFF_NOARP: u32 = 0x80;

const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
/// `RTNLGRP_LINK`: link created, deleted or changed.
const RTNLGRP_LINK: libc::c_int = 1;
/// `RTNLGRP_IPV6_IFADDR`: IPv6 address added/removed (link-local appears after DAD).
const RTNLGRP_IPV6_IFADDR: libc::c_int = 9;

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
/// `IFA_F_DADFAILED`.
pub const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_TENTATIVE`: duplicate address detection not finished; not usable as a source yet.
pub const IFA_F_TENTATIVE: u32 = 0x40;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// What the kernel says about one interface (from `RTM_GETLINK` and `RTM_GETADDR` dumps).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceInfo {
    /// Interface index.
    pub index: u32,
    /// Name (`IFLA_IFNAME`).
    pub name: String,
    /// `IFF_*` flags.
    pub flags: u32,
    /// Hardware address, if it is a 6-octet one (`IFLA_ADDRESS`).
    pub mac: Option<MacAddr>,
    /// Index of the master device (bridge, bond, VRF) if enslaved (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// IPv4 addresses.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses with their `IFA_F_*` flags.
    pub ipv6: Vec<(Ipv6Addr, u32)>,
}

impl InterfaceInfo {
    /// The first usable (not tentative, not failed DAD) IPv6 link-local address.
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        self.ipv6
            .iter()
            .find(|(ip, flags)| {
                ip.is_unicast_link_local() && flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0
            })
            .map(|(ip, _)| *ip)
    }
}

fn io_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Sets an integer socket option.
fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives for the duration of the call and the length passed is its size;
    // the kernel only reads `optlen` bytes from `optval`. An invalid fd yields EBADF, not UB.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io_err("setsockopt"))
    }
}

/// Opens a raw AF_PACKET socket receiving frames of EtherType `protocol` from interface
/// `ifindex` only (non-promiscuous; frames we send ourselves are not looped back). The socket
/// is created with protocol 0 and bound with `protocol`, so no frame from another interface is
/// ever queued on it. Blocking; call `set_nonblocking` before wrapping it in `AsyncFd`.
/// `send`/`write` on it transmit a whole Ethernet frame on that interface.
pub fn open_packet_socket(ifindex: u32, protocol: u16) -> io::Result<Socket> {
    let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
    sock.set_cloexec(true)?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` is a properly initialised sockaddr_ll and we pass its exact size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const sll).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_err("bind AF_PACKET socket"));
    }
    // Linux >= 4.20; on older kernels we filter our own frames by source MAC anyway.
    let _ = setsockopt_int(
        sock.as_raw_fd(),
        libc::SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        1,
    );
    Ok(sock)
}

/// Sets the receive buffer to `bytes`, beyond `net.core.rmem_max` if we have CAP_NET_ADMIN
/// (`SO_RCVBUFFORCE`), else as far as the limit allows. Absorbs scheduling stalls at high
/// request rates without dropping frames.
pub fn set_receive_buffer(sock: &Socket, bytes: usize) -> io::Result<()> {
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        val,
    )
    .or_else(|_| sock.set_recv_buffer_size(bytes))
}

/// Opens an NDP AF_PACKET socket on `ifindex` with a classic BPF filter attached that accepts
/// only IPv6 frames that can be Neighbor Solicitations (next header ICMPv6 with type 135, or a
/// Hop-by-Hop/Destination Options header first, left to the decoder), so the host's IPv6 data
/// traffic is never copied to the responder.
pub fn open_ndp_socket(ifindex: u32) -> io::Result<Socket> {
    let sock = open_packet_socket(ifindex, ETH_P_IPV6)?;
    sock.attach_filter(&ndp_filter_program())?;
    Ok(sock)
}

/// The NDP filter program: accept returns 0xffff octets, drop returns 0. Jump offsets are
/// relative to the next instruction.
fn ndp_filter_program() -> Vec<SockFilter> {
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    vec![
        /* 0 */ SockFilter::new(LDH_ABS, 0, 0, 12),
        /* 1 */ SockFilter::new(JEQ_K, 0, 7, u32::from(ETH_P_IPV6)), // no -> 9 (drop)
        /* 2 */ SockFilter::new(LDB_ABS, 0, 0, 20),
        /* 3 */ SockFilter::new(JEQ_K, 3, 0, 58), // icmpv6 -> 7
        /* 4 */ SockFilter::new(JEQ_K, 5, 0, 0), // hop-by-hop -> 10 (accept)
        /* 5 */ SockFilter::new(JEQ_K, 4, 0, 60), // dest opts -> 10 (accept)
        /* 6 */ SockFilter::new(RET_K, 0, 0, 0), // other next header: drop
        /* 7 */ SockFilter::new(LDB_ABS, 0, 0, 54), // icmpv6 type
        /* 8 */ SockFilter::new(JEQ_K, 1, 0, 135), // NS -> 10 (accept)
        /* 9 */ SockFilter::new(RET_K, 0, 0, 0),
        /* 10 */ SockFilter::new(RET_K, 0, 0, 0xffff),
    ]
}

/// A UDP/IPv6 socket used only to hold solicited-node multicast memberships on `ifindex`:
/// `IPV6_ADD_MEMBERSHIP` makes the kernel send MLD reports and program the NIC's multicast
/// filter. It is never bound to a port, so it never receives anything.
pub fn open_membership_socket() -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_cloexec(true)?;
    Ok(sock)
}

/// Registers `sock` with the current tokio reactor (must be called in a runtime context; the
/// socket should be non-blocking).
pub fn async_socket(sock: Socket) -> io::Result<tokio::io::unix::AsyncFd<Socket>> {
    // SAFETY: a `Socket` owns its file descriptor (an `OwnedFd`): it is valid and open, it is
    // closed only when the `Socket` is dropped, which happens only when the `AsyncFd` (which
    // owns it) is dropped or unwrapped, and `as_raw_fd` always returns that same descriptor.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(sock) }?;
    Ok(fd)
}

/// Moves the calling thread (only it) into the network namespace `/run/netns/<name>` (as
/// created by `ip netns add`). Sockets created afterwards on this thread, and threads spawned
/// by it, live in that namespace.
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = if name.contains('/') {
        name.to_string()
    } else {
        format!("/run/netns/{name}")
    };
    let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: `f` is an open namespace file descriptor for the duration of the call;
    // setns only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io_err("setns")).with_context(|| format!("enter netns {name}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// rtnetlink

fn open_netlink() -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW.cloexec(),
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )?;
    Ok(sock)
}

/// Opens a non-blocking rtnetlink socket subscribed to link changes and IPv6 address changes
/// (`RTMGRP_LINK | RTMGRP_IPV6_IFADDR`). Whatever arrives on it means "rescan".
pub fn open_link_monitor() -> io::Result<Socket> {
    let sock = open_netlink()?;
    // Bind (port id chosen by the kernel) first: an unbound socket has port id 0, the kernel's
    // own, and multicast delivery skips the sender's port id.
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut snl: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    snl.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `snl` is an initialised sockaddr_nl and we pass its exact size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const snl).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_err("bind netlink socket"));
    }
    for group in [RTNLGRP_LINK, RTNLGRP_IPV6_IFADDR] {
        setsockopt_int(sock.as_raw_fd(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)?;
    }
    let _ = sock.set_recv_buffer_size(1 << 20);
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Waits until `sock` is readable or `timeout` passes (`ppoll`, nanosecond timeout: unlike
/// `SO_RCVTIMEO`, which the kernel rounds up to its tick, 4 ms at HZ=250). `true` when readable.
pub fn wait_readable(sock: &Socket, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    // SAFETY: `pfd` is one valid pollfd for a descriptor `sock` keeps open for the call; `ts` is
    // a valid timespec; a null signal mask leaves the mask unchanged.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    match rc {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(pfd.revents & libc::POLLIN != 0),
    }
}

fn netlink_dump(msg_type: u16, body: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let sock = open_netlink()?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let seq: u32 = 1;
    let len = NLMSG_HDR_LEN + body.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&msg_type.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(body);
    // Unconnected netlink sockets send to the kernel (port id 0).
    (&sock).write_all(&req)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = (&sock).read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "netlink closed",
            ));
        }
        for (kind, payload) in split_messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = payload
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .map(i32::from_ne_bytes)
                        .unwrap_or(0);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                _ => out.push((kind, payload.to_vec())),
            }
        }
    }
}

/// Splits a netlink datagram into `(type, payload)` pairs, stopping at the first malformed
/// header.
pub(crate) fn split_messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR_LEN || len > buf.len() {
            break;
        }
        out.push((kind, &buf[NLMSG_HDR_LEN..len]));
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

/// Iterates route attributes `(type, value)`; stops at the first malformed one.
pub(crate) fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

/// Parses `RTM_NEWLINK` payloads (ifinfomsg + attributes). Malformed entries are skipped.
pub(crate) fn parse_links(msgs: &[(u16, Vec<u8>)]) -> Vec<InterfaceInfo> {
    let mut out = Vec::new();
    for (kind, p) in msgs {
        if *kind != RTM_NEWLINK || p.len() < IFINFOMSG_LEN {
            continue;
        }
        let index = i32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
        let Ok(index) = u32::try_from(index) else {
            continue;
        };
        let flags = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
        let mut info = InterfaceInfo {
            index,
            flags,
            ..InterfaceInfo::default()
        };
        for (t, v) in attributes(&p[IFINFOMSG_LEN..]) {
            match t {
                IFLA_IFNAME => {
                    let v = v.split(|b| *b == 0).next().unwrap_or(&[]);
                    info.name = String::from_utf8_lossy(v).into_owned();
                }
                IFLA_ADDRESS => {
                    if let Ok(o) = <[u8; 6]>::try_from(v) {
                        info.mac = Some(MacAddr(o));
                    }
                }
                IFLA_MASTER => {
                    if let Ok(o) = <[u8; 4]>::try_from(v) {
                        let m = u32::from_ne_bytes(o);
                        info.master = (m != 0).then_some(m);
                    }
                }
                _ => {}
            }
        }
        out.push(info);
    }
    out
}

/// One address from an `RTM_NEWADDR` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrEntry {
    V4(u32, Ipv4Addr),
    V6(u32, Ipv6Addr, u32),
}

/// Parses `RTM_NEWADDR` payloads (ifaddrmsg + attributes). Malformed entries are skipped.
pub(crate) fn parse_addrs(msgs: &[(u16, Vec<u8>)]) -> Vec<AddrEntry> {
    let mut out = Vec::new();
    for (kind, p) in msgs {
        if *kind != RTM_NEWADDR || p.len() < IFADDRMSG_LEN {
            continue;
        }
        let family = p[0];
        let mut flags = u32::from(p[2]);
        let index = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
        let (mut local, mut address) = (None, None);
        for (t, v) in attributes(&p[IFADDRMSG_LEN..]) {
            match t {
                IFA_LOCAL => local = Some(v),
                IFA_ADDRESS => address = Some(v),
                IFA_FLAGS => {
                    if let Ok(o) = <[u8; 4]>::try_from(v) {
                        flags = u32::from_ne_bytes(o);
                    }
                }
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address on point-to-point links.
        let Some(a) = local.or(address) else { continue };
        match family {
            AF_INET => {
                if let Ok(o) = <[u8; 4]>::try_from(a) {
                    out.push(AddrEntry::V4(index, Ipv4Addr::from(o)));
                }
            }
            AF_INET6 => {
                if let Ok(o) = <[u8; 16]>::try_from(address.unwrap_or(a)) {
                    out.push(AddrEntry::V6(index, Ipv6Addr::from(o), flags));
                }
            }
            _ => {}
        }
    }
    out
}

/// Lists the interfaces of the calling thread's network namespace with their addresses.
pub fn list_interfaces() -> io::Result<Vec<InterfaceInfo>> {
    let links = netlink_dump(RTM_GETLINK, &[0u8; IFINFOMSG_LEN])?;
    let addrs = netlink_dump(RTM_GETADDR, &[0u8; IFADDRMSG_LEN])?;
    Ok(merge(parse_links(&links), parse_addrs(&addrs)))
}

fn merge(mut links: Vec<InterfaceInfo>, addrs: Vec<AddrEntry>) -> Vec<InterfaceInfo> {
    for a in addrs {
        let idx = match a {
            AddrEntry::V4(i, _) | AddrEntry::V6(i, _, _) => i,
        };
        if let Some(l) = links.iter_mut().find(|l| l.index == idx) {
            match a {
                AddrEntry::V4(_, ip) => l.ipv4.push(ip),
                AddrEntry::V6(_, ip, f) => l.ipv6.push((ip, f)),
            }
        }
    }
    links
}

/// Looks one interface up by name.
pub fn interface_by_name(name: &str) -> anyhow::Result<InterfaceInfo> {
    list_interfaces()
        .context("list interfaces")?
        .into_iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no interface named {name:?}"))
}

/// Longest TCP-MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const TCP_MD5_MAX_KEY: usize = 80;

/// `struct tcp_md5sig` of `linux/tcp.h` (libc does not define it).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; TCP_MD5_MAX_KEY],
}

/// Ask the kernel to report each received datagram's IPv4 TTL (`IP_RECVTTL`) or IPv6 hop
/// limit (`IPV6_RECVHOPLIMIT`), for [`recv_with_ttl`] (BFD's GTSM check, RFC 5881 §5).
pub fn set_recv_ttl(sock: &Socket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        setsockopt_int(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            1,
        )
    } else {
        setsockopt_int(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// One datagram read by [`recv_with_ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes written to the buffer.
    pub len: usize,
    /// The sender.
    pub from: std::net::SocketAddr,
    /// The TTL / hop limit it arrived with (None if the kernel did not say).
    pub ttl: Option<u8>,
}

/// Read one datagram without blocking (`WouldBlock` when none is queued), with the TTL or
/// hop limit the kernel reports in its control message (see [`set_recv_ttl`]).
pub fn recv_with_ttl(sock: &Socket, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut ttl = None;
    // SAFETY: try_init hands us a zeroed sockaddr storage and its length, and builds the
    // address from what the kernel wrote there. msghdr is plain old data (all-zero is valid);
    // every pointer put in it points at a live local (`storage`, `iov` → `buf`, `control`)
    // with the length given next to it, and the kernel writes at most those lengths. The
    // CMSG_* helpers walk the control messages recvmsg described inside `control` without
    // leaving it; each header they return is inside `control` and aligned (u64 buffer).
    let (n, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast::<libc::c_void>();
            msg.msg_namelen = *len;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast::<libc::c_void>();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(sock.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
            while !c.is_null() {
                let h = &*c;
                let wanted = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
                    || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT);
                if wanted && h.cmsg_len as usize >= libc::CMSG_LEN(4) as usize {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    ttl = u8::try_from(v).ok();
                }
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
            Ok(n as usize)
        })
    }?;
    let from = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP sender"))?;
    Ok(Datagram { len: n, from, ttl })
}

/// Sign every segment to and from `peer` on `sock` with TCP-MD5 (RFC 2385) using `key`, as
/// MetalLB does for a peer's `password`. Set before `connect()`. Fails with
/// `InvalidInput` for a key longer than [`TCP_MD5_MAX_KEY`] bytes or a peer of another
/// family than the socket.
pub fn set_tcp_md5(sock: &Socket, peer: std::net::IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > TCP_MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP-MD5 password is {} bytes, the kernel takes at most {TCP_MD5_MAX_KEY}",
                key.len()
            ),
        ));
    }
    // SAFETY: TcpMd5Sig is plain old data (integers and byte arrays); all-zero is valid.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let addr = socket2::SockAddr::from(std::net::SocketAddr::new(peer, 0));
    let len = (addr.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: both regions are valid for `len` bytes (len is bounded by the destination's
    // size and is the source's own length), they do not overlap, and sockaddr_storage is
    // plain old data.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            (&raw mut sig.addr).cast::<u8>(),
            len,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a fully initialised tcp_md5sig and we pass its exact size; the kernel
    // only reads it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_err("setsockopt TCP_MD5SIG"));
    }
    Ok(())
}

/// Give the allocator's free pages back to the kernel (glibc `malloc_trim(0)`, which walks
/// every arena). Called after a full relist: decoding thousands of list items leaves freed
/// chunks spread over the worker threads' arenas that glibc would otherwise keep resident.
/// A no-op with other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and returns the allocator's free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocator settings for a long-running daemon whose memory comes in bursts (a relist or the
/// first decision over thousands of Services, then little): glibc's defaults keep up to 8
/// arenas per core and raise the mmap and trim thresholds after each large free, so the
/// burst's pages stay resident. Two arenas, a fixed 256 KiB mmap threshold (large buffers go
/// back to the kernel on free) and a fixed 1 MiB trim threshold (BENCHMARKS.md, speaker
/// memory). A no-op with other C libraries. Call first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// [`release_free_memory`] once two seconds have passed without another call: after a burst
/// (start-up, a relist, initial BGP tables), not in the middle of it, when the
/// session writers and Event tasks still hold its buffers. One timer however often it is called.
/// Needs a tokio runtime; without one it does nothing.
pub fn release_free_memory_soon() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    const QUIET: Duration = Duration::from_secs(2);
    static PENDING: AtomicBool = AtomicBool::new(false);
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    /// Milliseconds since [`EPOCH`] of the latest call.
    static LAST: AtomicU64 = AtomicU64::new(0);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let epoch = *EPOCH.get_or_init(Instant::now);
    let now_ms = move || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    LAST.store(now_ms(), Ordering::Release);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    rt.spawn(async move {
        loop {
            tokio::time::sleep(QUIET).await;
            let quiet_for = now_ms().saturating_sub(LAST.load(Ordering::Acquire));
            if u128::from(quiet_for) >= QUIET.as_millis() {
                break;
            }
        }
        PENDING.store(false, Ordering::Release);
        release_free_memory();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TTL a datagram was sent with comes back in the control message, on IPv4 and IPv6
    /// loopback; nothing queued is `WouldBlock`.
    #[test]
    fn received_ttl_and_hop_limit_are_reported() {
        for (addr, v6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let dom = Domain::for_address(addr);
            let rx = Socket::new(dom, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            if rx.bind(&addr.into()).is_err() {
                continue; // no IPv6 loopback here
            }
            set_recv_ttl(&rx, v6).unwrap();
            let to = rx.local_addr().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(
                recv_with_ttl(&rx, &mut buf).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            for ttl in [255u32, 7] {
                let tx = Socket::new(dom, Type::DGRAM, Some(Protocol::UDP)).unwrap();
                if v6 {
                    tx.set_unicast_hops_v6(ttl).unwrap();
                } else {
                    tx.set_ttl_v4(ttl).unwrap();
                }
                tx.send_to(b"hello", &to).unwrap();
                assert!(wait_readable(&rx, Duration::from_secs(5)).unwrap());
                let d = recv_with_ttl(&rx, &mut buf).unwrap();
                assert_eq!(&buf[..d.len], b"hello");
                assert_eq!(d.ttl, Some(ttl as u8), "{addr}");
                let sender = tx.local_addr().unwrap().as_socket().unwrap();
                assert_eq!(d.from.port(), sender.port());
                assert!(d.from.ip().is_loopback());
            }
        }
    }

    fn attr(kind: u16, v: &[u8]) -> Vec<u8> {
        let len = 4 + v.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(v);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn link(index: i32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&index.to_ne_bytes());
        p[8..12].copy_from_slice(&flags.to_ne_bytes());
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    #[test]
    fn parses_links_and_addresses() {
        let eth = link(
            2,
            IFF_UP | IFF_BROADCAST,
            &[
                attr(IFLA_IFNAME, b"eth0\0"),
                attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]),
            ],
        );
        let port = link(
            3,
            IFF_UP,
            &[
                attr(IFLA_IFNAME, b"p0\0"),
                attr(IFLA_MASTER, &5u32.to_ne_bytes()),
            ],
        );
        let links = parse_links(&[
            (RTM_NEWLINK, eth),
            (RTM_NEWLINK, port),
            (RTM_NEWLINK, vec![1, 2]),
        ]);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].name, "eth0");
        assert_eq!(links[0].mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(links[0].master, None);
        assert_eq!(links[1].master, Some(5));

        let mut a6 = vec![AF_INET6, 64, IFA_F_TENTATIVE as u8, 253];
        a6.extend_from_slice(&2u32.to_ne_bytes());
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        a6.extend_from_slice(&attr(IFA_ADDRESS, &ll.octets()));
        let mut a4 = vec![AF_INET, 24, 0, 0];
        a4.extend_from_slice(&2u32.to_ne_bytes());
        a4.extend_from_slice(&attr(IFA_LOCAL, &[192, 0, 2, 1]));
        let addrs = parse_addrs(&[(RTM_NEWADDR, a6.clone()), (RTM_NEWADDR, a4)]);
        assert_eq!(addrs.len(), 2);
        let merged = merge(links.clone(), addrs);
        assert_eq!(merged[0].ipv4, vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(merged[0].link_local(), None, "tentative");
        // IFA_FLAGS overrides the 8-bit flags.
        a6.extend_from_slice(&attr(IFA_FLAGS, &0u32.to_ne_bytes()));
        let merged = merge(links, parse_addrs(&[(RTM_NEWADDR, a6)]));
        assert_eq!(merged[0].link_local(), Some(ll));
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = split_messages(&junk);
            let _ = attributes(&junk);
            let _ = parse_links(&[(RTM_NEWLINK, junk.clone())]);
            let _ = parse_addrs(&[(RTM_NEWADDR, junk)]);
        }
        // Attribute length larger than the buffer.
        assert!(attributes(&[200, 0, 1, 0, 0, 0]).is_empty());
        // Message length smaller than a header.
        assert!(split_messages(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_empty());
    }
}
