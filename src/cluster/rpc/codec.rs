//! The gRPC codec between nodes: prost messages, each encoded into send-buffer room reserved at
//! its exact size first.
//!
//! tonic's prost codec lets its send buffer grow while a message is written into it, from 8 KiB
//! by doubling: a 1 MiB collect chunk went through seven reallocations, copying what was
//! written so far each time and faulting fresh pages in (the buffer is shared with the bytes
//! already handed to HTTP/2, so each message starts a new one). Reserving `encoded_len` first
//! makes that one allocation of the right size. Decoding is prost's, unchanged (tonic reserves
//! a received message's length from its header already).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;

/// The codec of the generated cluster client and server (`build.rs`, `codec_path`).
#[derive(Debug, Clone)]
pub struct PeerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for PeerCodec<T, U> {
    fn default() -> Self {
        PeerCodec(PhantomData)
    }
}

impl<T, U> Codec for PeerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ReservingEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ReservingEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}

/// Encodes a prost message after reserving room for all of it.
#[derive(Debug)]
pub struct ReservingEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ReservingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message for a peer: {e}")))
    }
}
