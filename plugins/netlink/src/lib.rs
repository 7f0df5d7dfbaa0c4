//! sync rtnetlink helpers
