//! BGP wire format (placeholder; filled in by the codec work).
