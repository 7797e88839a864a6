//! The protobuf codec of the `arbor.v1` services: prost's, except that a request message
//! that does not decode is the client's mistake, `INVALID_ARGUMENT`, where prost's codec
//! says `INTERNAL` (which clients and meshes treat as a server fault and retry).

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// Named in build.rs as the generated services' codec.
#[derive(Debug, Clone, Default)]
pub struct ArborCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for ArborCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = ArborDecoder<<ProstCodec<T, U> as Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ArborDecoder(self.0.decoder())
    }
}

/// prost's decoder with decode failures answered as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct ArborDecoder<D>(D);

impl<D: Decoder<Error = Status>> Decoder for ArborDecoder<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => Status::invalid_argument(format!(
                "the message does not decode as protobuf: {}",
                s.message()
            )),
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
