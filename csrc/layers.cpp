// A TorchScript module's layers as Keras's model.summary() lists them: each child module of
// the root, its class, and the shape of its output on given inputs. TorchScript has no forward
// hooks to do this with; instead, a copy of the root's forward graph (un-inlined, so that a
// child's call is one prim::CallMethod node) returns each child's output, and runs once. A
// child that forward does not call but whose parameters it reads (torchfit's generated
// modules apply torch.linear to `self.blocks.0.linear1.weight`, say) shows the output of the
// last op that reads them. Ops inside a loop or a branch (sub-blocks) are not seen: such a
// child is listed without a shape.
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "guarded.h"
#include "torchfit.h"

using torchfit::guarded;

namespace {

bool is_tensor(torch::jit::Value* value) { return value->type()->isSubtypeOf(*c10::TensorType::get()); }

// Each child's output in the root's forward `graph`: the first `self.<child>(...)` call's,
// else that of the last op reading the child's attributes (see above).
std::vector<std::pair<std::string, torch::jit::Value*>> child_outputs(torch::jit::Graph& graph) {
  using namespace torch::jit;
  Value* self = graph.inputs().at(0);
  std::map<Value*, std::string> owner;  // attributes of self's children, by child
  std::map<std::string, Value*> called, read;
  std::vector<std::string> order;
  for (Node* node : graph.nodes()) {
    if (node->kind() == prim::GetAttr) {
      auto from = owner.find(node->input(0));
      if (node->input(0) == self) owner[node->output()] = node->s(attr::name);
      else if (from != owner.end()) owner[node->output()] = from->second;
      continue;
    }
    if (node->outputs().size() != 1 || !is_tensor(node->output())) continue;
    for (Value* input : node->inputs()) {
      auto child = owner.find(input);
      if (child == owner.end()) continue;
      bool call = node->kind() == prim::CallMethod && input == node->input(0) && node->s(attr::name) == "forward";
      if (call && !called.count(child->second)) called[child->second] = node->output();
      if (!call) read[child->second] = node->output();
      if (std::find(order.begin(), order.end(), child->second) == order.end()) order.push_back(child->second);
    }
  }
  std::vector<std::pair<std::string, Value*>> found;
  for (const auto& child : order) found.emplace_back(child, called.count(child) ? called[child] : read[child]);
  return found;
}

std::string shape_text(const at::Tensor& t) {
  std::string text;
  for (int64_t i = 0; i < t.dim(); ++i) text += (i ? "," : "") + std::to_string(t.size(i));
  return text;
}

}  // namespace

extern "C" {

// Writes to *out (malloc'd) one line per child module of the root, in order:
// "<name>\t<qualified class name>\t<output shape, comma-separated, or empty>".
char* tf_module_layers(void* module, const void* const* inputs, size_t n_inputs, char** out) {
  return guarded([&] {
    using namespace torch::jit;
    auto* m = static_cast<Module*>(module);
    auto graph = toGraphFunction(m->get_method("forward").function()).graph()->copy();
    std::vector<std::string> called;
    std::vector<Value*> values;
    for (const auto& [child, value] : child_outputs(*graph)) {
      called.push_back(child);
      values.push_back(value);
    }
    std::map<std::string, std::string> shapes;
    if (!values.empty()) {
      {
        WithInsertPoint at_return(graph->return_node());
        Value* tuple = graph->insertNode(graph->createTuple(values))->output();
        while (!graph->outputs().empty()) graph->eraseOutput(0);
        graph->registerOutput(tuple);
      }
      GraphFunction probe("torchfit_layers", graph, nullptr);
      Stack stack{m->_ivalue()};
      for (size_t i = 0; i < n_inputs; ++i) stack.emplace_back(*static_cast<const torch::Tensor*>(inputs[i]));
      probe.run(stack);
      const auto& outputs = stack.back().toTupleRef().elements();
      for (size_t i = 0; i < called.size(); ++i) shapes.emplace(called[i], shape_text(outputs[i].toTensor()));
    }
    std::string text;
    for (const auto& child : m->named_children()) {
      auto type = child.value.type()->name();
      auto found = shapes.find(child.name);
      text += child.name + "\t" + (type ? type->qualifiedName() : std::string("Module")) + "\t" +
              (found == shapes.end() ? "" : found->second) + "\n";
    }
    auto* copy = static_cast<char*>(std::malloc(text.size() + 1));
    if (copy == nullptr) throw std::bad_alloc();
    std::memcpy(copy, text.c_str(), text.size() + 1);
    *out = copy;
  });
}

}  // extern "C"
