// The extensions conv2d_coop.wgsl needs. WGSL wants them before any declaration, so they
// come first of the sources the host puts together (src/gpu/kernels/conv/tile.rs).
enable f16;
enable wgpu_cooperative_matrix;
