// CUDA side of the transposed 3D convolution (kernels/conv_transpose3d.h): it has no kernels of
// its own. Each of its ops is a conv3d op on the adjoint convolution (forward = conv3d
// backward_data with the bias fused into its epilogue, backward_data = conv3d forward,
// backward_weight = conv3d backward_weight with x and dy swapped), so kernels/conv_transpose3d.cpp
// calls conv3d's launchers (kernels/conv3d.cu) or its cuDNN engine directly. This file exists so
// that the family is built like every other (CMake finds families from kernels/*.cu).
#include "runtime/kernel_prelude.h"

#include "kernels/conv_transpose3d.h"
