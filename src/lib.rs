//! twistor
