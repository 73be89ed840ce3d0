// ssdfast op schemas and the Python module entry.
//
// Each op is declared once here; cpu/<op>_kernel.cpp and cuda/<op>_kernel.cu register their
// implementations with TORCH_LIBRARY_IMPL. Importing ssdfast._C runs these registrations; the module
// itself is empty. Contracts: ssdfast/ops/__init__.py and DESIGN.md.
#include <Python.h>
#include <torch/library.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "ssdfast kernels (registered as torch.ops.ssdfast.*)", -1, nullptr};
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
