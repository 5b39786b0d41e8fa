//! Legacy config → metallb.io CRD objects. Pure.
