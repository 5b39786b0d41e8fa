//! BGP session state machine (placeholder; filled in by the FSM work).
