//! BGP wire format (placeholder; filled in by the codec work).
use super::message::*;
pub fn frame_len(_buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    todo!()
}
pub fn decode(_msg: &[u8], _ctx: Ctx) -> Result<Message, DecodeError> {
    todo!()
}
pub fn encode(_msg: &Message, _ctx: Ctx, _out: &mut Vec<u8>) {
    todo!()
}
pub fn encoded_len(_msg: &Message, _ctx: Ctx) -> usize {
    todo!()
}
pub fn prefix_len_bytes(_l: u8) -> usize {
    todo!()
}
