//! The sled implementation of [`super::Store`] (being built under the spine issue).
