//! BGP session state machine (placeholder; filled in by the FSM work).
use super::message::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
pub struct Config {
    pub local_as: u32,
    pub peer_as: u32,
    pub hold_time: u16,
    pub keepalive: Option<u16>,
    pub graceful_restart: Option<u16>,
    pub seed: u64,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}
pub enum Input {
    Start,
    Stop {
        subcode: u8,
    },
    Connected {
        router_id: Ipv4Addr,
        restarting: bool,
    },
    ConnectFailed,
    Closed,
    Received(Message),
    Malformed(DecodeError),
    Fired(Timer),
}
pub enum Output {
    Connect,
    Send(Message),
    Close,
    Arm(Timer, Duration),
    Cancel(Timer),
    Established(Negotiated),
    Down(Down),
    RouteRefresh { afi: u16, safi: u8 },
}
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_router_id: Ipv4Addr,
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub route_refresh: bool,
    pub peer_graceful_restart: Option<GracefulRestart>,
}
#[derive(Debug)]
pub enum Down {
    ConnectFailed,
    Closed,
    HoldTimerExpired,
    Sent(Notification),
    Received(Notification),
    Stopped,
}
impl Down {
    pub fn reason(&self) -> &'static str {
        todo!()
    }
}
pub struct Fsm;
impl Fsm {
    pub fn new(_c: Config) -> Self {
        todo!()
    }
    pub fn negotiated(&self) -> Option<&Negotiated> {
        todo!()
    }
    pub fn process(&mut self, _now: Instant, _i: Input) -> Vec<Output> {
        todo!()
    }
}
