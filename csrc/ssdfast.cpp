// ssdfast op schemas and the Python module entry.
//
// Each op is declared once here; cpu/<op>_kernel.cpp and cuda/<op>_kernel.cu register their
// implementations with TORCH_LIBRARY_IMPL. Importing ssdfast._C runs these registrations. The module
// itself only reports how it was built (build_info) and, with CUDA, which kernel image a device would
// run (cuda_kernel_image); `python -m ssdfast.check` prints both. Contracts: ssdfast/ops/__init__.py
// and README.md's "The ops"; where a new op's parts go: README.md's "Development".
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#define SSDFAST_STR_(...) #__VA_ARGS__
#define SSDFAST_STR(...) SSDFAST_STR_(__VA_ARGS__)

#ifdef SSDFAST_WITH_CUDA
namespace ssdfast {
const char* cuda_arch_list();  // cuda/build_info.cu
int cuda_build_version();
std::string cuda_kernel_image(int device, int* binary_version, int* ptx_version);
}  // namespace ssdfast
#endif

namespace {

// build_info() -> dict: torch_version (the torch compiled against), with_cuda, and with CUDA:
// cuda_version ("13.0"), cuda_arch_list (nvcc's virtual architectures, "750,...,900") and
// torch_cuda_arch_list (TORCH_CUDA_ARCH_LIST at build time, separators as commas; "" when torch chose).
PyObject* build_info(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  auto set = [d](const char* key, PyObject* value) {
    if (value == nullptr) return false;
    const int rc = PyDict_SetItemString(d, key, value);
    Py_DECREF(value);
    return rc == 0;
  };
  bool ok = set("torch_version", PyUnicode_FromString(TORCH_VERSION));
#ifdef SSDFAST_WITH_CUDA
  const int v = ssdfast::cuda_build_version();
  const std::string cuda_version = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
  ok = ok && set("with_cuda", PyBool_FromLong(1));
  ok = ok && set("cuda_version", PyUnicode_FromString(cuda_version.c_str()));
  ok = ok && set("cuda_arch_list", PyUnicode_FromString(ssdfast::cuda_arch_list()));
#ifdef SSDFAST_TORCH_CUDA_ARCH_LIST
  ok = ok && set("torch_cuda_arch_list", PyUnicode_FromString(SSDFAST_STR(SSDFAST_TORCH_CUDA_ARCH_LIST)));
#else
  ok = ok && set("torch_cuda_arch_list", PyUnicode_FromString(""));
#endif
#else
  ok = ok && set("with_cuda", PyBool_FromLong(0));
#endif
  if (!ok) {
    Py_DECREF(d);
    return nullptr;
  }
  return d;
}

// cuda_kernel_image(device: int) -> (binary_version, ptx_version), e.g. (90, 90); RuntimeError naming
// the CUDA error when no image of the extension fits the device (or without CUDA).
PyObject* cuda_kernel_image(PyObject*, PyObject* arg) {
  const long device = PyLong_AsLong(arg);
  if (device == -1 && PyErr_Occurred()) return nullptr;
#ifdef SSDFAST_WITH_CUDA
  int binary = 0, ptx = 0;
  std::string err;
  Py_BEGIN_ALLOW_THREADS
  err = ssdfast::cuda_kernel_image(static_cast<int>(device), &binary, &ptx);
  Py_END_ALLOW_THREADS
  if (!err.empty()) {
    PyErr_SetString(PyExc_RuntimeError, err.c_str());
    return nullptr;
  }
  return Py_BuildValue("(ii)", binary, ptx);
#else
  PyErr_SetString(PyExc_RuntimeError, "ssdfast._C was built without CUDA");
  return nullptr;
#endif
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS, "How the extension was built (dict)."},
    {"cuda_kernel_image", cuda_kernel_image, METH_O,
     "(binary_version, ptx_version) of the kernel image a CUDA device runs; RuntimeError when none fits."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "ssdfast kernels (registered as torch.ops.ssdfast.*)", -1, methods};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(ssdfast, m) {
  m.def("box_iou(Tensor a, Tensor b) -> Tensor");
  m.def("encode_boxes(Tensor boxes, Tensor priors, float[] variances) -> Tensor");
  m.def("decode_boxes(Tensor loc, Tensor priors, float[] variances) -> Tensor");
  m.def("match_priors(Tensor priors, Tensor gt_boxes, Tensor gt_labels, float iou_threshold) -> (Tensor, Tensor)");
  m.def(
      "ssd_targets(Tensor priors, Tensor gt_boxes, Tensor gt_labels, float iou_threshold, float[] variances) "
      "-> (Tensor, Tensor)");
  m.def("hard_negative_mask(Tensor neg_loss, Tensor labels, int neg_pos_ratio) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def(
      "ssd_postprocess(Tensor loc, Tensor scores, Tensor priors, float[] variances, float score_threshold, "
      "float iou_threshold, int top_k, int max_detections) -> (Tensor, Tensor, Tensor, Tensor)");
}
