// Reference side of the transposed 3D convolution (kernels/conv_transpose3d.h): nothing of its
// own. Its ops run conv3d's reference (kernels/cpu/conv3d.cpp, im2col + GEMM) on the adjoint
// convolution, dispatched by kernels/conv_transpose3d.cpp; the tests check the result against
// an independent direct (scatter) loop. This file exists so that the family is built like every
// other.
#include "kernels/conv_transpose3d.h"
