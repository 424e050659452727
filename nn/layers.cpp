#include "nn/layers.h"

namespace sg {

Linear::Linear(int64_t in_features, int64_t out_features, Options options)
    : weight_(param("weight", {out_features, in_features}, ParamInit::normal(options.init_std))),
      bias_(options.bias ? param("bias", {out_features}, ParamInit::zeros()) : Variable()) {
  SG_CHECK(in_features > 0 && out_features > 0, "Linear(", in_features, ", ", out_features,
           "): feature counts must be positive");
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, double init_std)
    : weight_(param("weight", {num_embeddings, embedding_dim}, ParamInit::normal(init_std, /*decays=*/false))) {
  SG_CHECK(num_embeddings > 0 && embedding_dim > 0, "Embedding(", num_embeddings, ", ", embedding_dim,
           "): sizes must be positive");
}

LayerNorm::LayerNorm(int64_t dim)
    : weight_(param("weight", {dim}, ParamInit::ones())), bias_(param("bias", {dim}, ParamInit::zeros())) {
  SG_CHECK(dim > 0, "LayerNorm(", dim, "): the dimension must be positive");
}

}  // namespace sg
