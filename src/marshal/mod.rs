//! Marshalling of typed argument lists (being built).
