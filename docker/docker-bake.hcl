# Every image of docker/, built with Buildx Bake from the repository root:
#   docker buildx bake -f docker/docker-bake.hcl            # all five
#   docker buildx bake -f docker/docker-bake.hcl serving    # one (its base comes along)
# The images workflow (.github/workflows/images.yml) runs the same targets, one image a job.
# The four platform images start FROM the named context `base`: here the build of the target
# `base` (docker/base.Dockerfile), built once for all of them. MLflow's image stands alone.

variable "REGISTRY" {
  default = "docker.io/realty"
}

# Comma-separated tags of every image; the workflow passes the commit sha, `latest` on main and
# the version on tags.
variable "TAGS" {
  default = "local"
}

# "gha" in the workflow: layers cached in GitHub Actions, one scope a target. Empty: no cache export.
variable "CACHE" {
  default = ""
}

function "image_tags" {
  params = [image]
  result = formatlist("${REGISTRY}/realty-${image}:%s", split(",", TAGS))
}

function "cache_from" {
  params = [scope]
  result = CACHE == "" ? [] : ["type=${CACHE},scope=${scope}"]
}

function "cache_to" {
  params = [scope]
  result = CACHE == "" ? [] : ["type=${CACHE},scope=${scope},mode=max"]
}

group "default" {
  targets = ["platform", "mlflow"]
}

target "base" {
  context    = "."
  dockerfile = "docker/base.Dockerfile"
  cache-from = cache_from("base")
  cache-to   = cache_to("base")
}

target "platform" {
  name       = image
  matrix     = { image = ["code", "serving", "ui", "source"] }
  context    = "."
  dockerfile = "docker/${image}.Dockerfile"
  contexts   = { base = "target:base" }
  tags       = image_tags(image)
  cache-from = cache_from(image)
  cache-to   = cache_to(image)
}

target "mlflow" {
  context    = "."
  dockerfile = "docker/mlflow.Dockerfile"
  tags       = image_tags("mlflow")
  cache-from = cache_from("mlflow")
  cache-to   = cache_to("mlflow")
}
