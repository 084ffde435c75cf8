#pragma once
// Every op family of the engine, for code that wants them all.
#include "framework/autograd/checkpoint.h"
#include "framework/autograd/grad_mode.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "framework/ops/reduce.h"
#include "framework/ops/view.h"
