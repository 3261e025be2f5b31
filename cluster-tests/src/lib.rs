//! Multi-node tests of pushgate: real processes on loopback (see tests/).
