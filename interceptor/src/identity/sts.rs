//! sts
