// A fixture for the layering check (tests/check_layers.cmake): an upward include it must refuse.
#pragma once

#include "kernels/linear.h"
#include "train/run.h"
