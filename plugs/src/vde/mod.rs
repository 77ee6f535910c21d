//! VDE2 switch directories and ports (being written).
