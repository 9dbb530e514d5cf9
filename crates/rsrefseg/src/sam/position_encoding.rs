//! Random-Fourier position encoding of SAM's prompt encoder (`PositionEmbeddingRandom`).
//!
//! A point `(x, y)` normalised to `[0, 1]` is mapped to `[-1, 1]`, projected by a fixed Gaussian
//! matrix `G (2, F)` and encoded as `[sin(2π·p·G), cos(2π·p·G)]` (2F channels). The same encoding
//! gives the dense PE of the image embedding grid (cell centres) and the sparse point prompts.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use std::f64::consts::PI;

#[derive(Config, Debug)]
pub struct PositionEmbeddingRandomConfig {
    /// Number of random frequencies F; the encoding has 2F channels.
    pub num_pos_feats: usize,
}

impl PositionEmbeddingRandomConfig {
    /// The matrix starts at zero; checkpoints always provide it (it is a buffer upstream).
    pub fn init<B: Backend>(&self, device: &B::Device) -> PositionEmbeddingRandom<B> {
        PositionEmbeddingRandom {
            positional_encoding_gaussian_matrix: Param::from_tensor(Tensor::zeros([2, self.num_pos_feats], device)),
        }
    }
}

#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom<B: Backend> {
    /// `G`, shape `(2, F)`.
    pub positional_encoding_gaussian_matrix: Param<Tensor<B, 2>>,
}

impl<B: Backend> PositionEmbeddingRandom<B> {
    /// Encode coordinates already normalised to `[0, 1]`.
    ///
    /// # Shapes
    /// - coords: `[b, n, 2]` as `(x, y)` → `[b, n, 2F]`
    pub fn encode(&self, coords: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, _] = coords.dims();
        let [_, f] = self.positional_encoding_gaussian_matrix.dims();
        let g = self.positional_encoding_gaussian_matrix.val().unsqueeze_dim::<3>(0).expand([b, 2, f]);
        let proj = (coords * 2.0 - 1.0).matmul(g) * (2.0 * PI);
        Tensor::cat(vec![proj.clone().sin(), proj.cos()], 2)
    }

    /// Dense encoding of an `h × w` grid of cell centres (`get_dense_pe` / `forward(size)`).
    ///
    /// # Shapes
    /// - output: `[2F, h, w]`
    pub fn dense(&self, [h, w]: [usize; 2]) -> Tensor<B, 3> {
        // Cell centres, computed as the reference does: (cumsum(ones) - 0.5) / size.
        let mut grid = Vec::with_capacity(h * w * 2);
        for i in 0..h {
            for j in 0..w {
                grid.push(((j + 1) as f32 - 0.5) / w as f32);
                grid.push(((i + 1) as f32 - 0.5) / h as f32);
            }
        }
        let device = self.positional_encoding_gaussian_matrix.device();
        let coords = Tensor::<B, 3>::from_data(TensorData::new(grid, [1, h * w, 2]), &device);
        let pe = self.encode(coords);
        let c = pe.dims()[2];
        // (1, h·w, C) -> (C, h, w)
        pe.reshape([h * w, c]).transpose().reshape([c, h, w])
    }

    /// Encode pixel coordinates of an image of size `(height, width)` (`forward_with_coords`).
    ///
    /// # Shapes
    /// - coords: `[b, n, 2]` as `(x, y)` in pixels → `[b, n, 2F]`
    pub fn encode_pixels(&self, coords: Tensor<B, 3>, [height, width]: [usize; 2]) -> Tensor<B, 3> {
        let device = coords.device();
        let size = Tensor::<B, 1>::from_data(TensorData::new(vec![width as f32, height as f32], [2]), &device);
        self.encode(coords / size.reshape([1, 1, 2]))
    }
}
