// Test-only extension for the build-engine tests. Plain CPython API (no torch or pybind11 headers) so
// each test build takes about a second; the module name comes from TORCH_EXTENSION_NAME like any op.
#include <Python.h>

#include "tiny_scale.h"

#define TINY_CAT2(a, b) a##b
#define TINY_CAT(a, b) TINY_CAT2(a, b)
#define TINY_STR2(a) #a
#define TINY_STR(a) TINY_STR2(a)

namespace {
PyObject* scale(PyObject*, PyObject* arg) {
  double x = PyFloat_AsDouble(arg);
  if (x == -1.0 && PyErr_Occurred()) return nullptr;
  return PyFloat_FromDouble(x * kTinyFactor);
}

PyObject* tier(PyObject*, PyObject*) { return PyUnicode_FromString(TINY_TIER); }

PyMethodDef methods[] = {
    {"scale", scale, METH_O, "multiply a float by the factor in tiny_scale.h"},
    {"tier", tier, METH_NOARGS, "the CPU tier macro this object was compiled with"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, TINY_STR(TORCH_EXTENSION_NAME), nullptr, -1, methods};
}  // namespace

PyMODINIT_FUNC TINY_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module_def); }
