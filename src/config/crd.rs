//! metallb.io CRD specs → typed Config. Pure.
