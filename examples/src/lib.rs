//! Examples of embedding Bergamot: see `embed.rs`.
