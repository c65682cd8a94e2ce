// The parameters every convolution kernel takes (conv2d.wgsl, conv2d_large.wgsl,
// conv2d_whole_k.wgsl and conv2d_coop.wgsl), put in front of each by the host
// (src/gpu/runtime/shaders.rs).

// Keep in step with `ConvParams` in src/gpu/kernels/conv/mod.rs (checked by a test).
struct ConvParams {
    in_h: u32,
    in_w: u32,
    in_c: u32,
    in_base: u32,   // element index of input flat row in_row0 within the input binding
    out_h: u32,
    out_w: u32,
    out_c: u32,
    out_base: u32,  // element index of output flat row out_row0 within the output binding
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    k_total: u32,
    relu: u32,
    out_row0: u32,  // first output flat row (n * out_h + oy) of this band
    out_rows: u32,
    in_row0: u32,   // first input flat row (n * in_h + y) present in the input binding
    out_stride: u32, // channels per output pixel; out_c is this dispatch's slice of them
    out_c0: u32,    // first output channel of the slice
    k_chunk: u32,   // split-K (conv2d.wgsl only): K per workgroup layer z, a multiple of BK; 0: whole K
    residual: u32,  // 1: add the residual binding (laid out as the output, f32) before ReLU
    res_base: u32,  // element index of output flat row out_row0 within the residual binding
}
