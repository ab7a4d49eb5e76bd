package org.dcclip.demo

import dcclip.core.BundleException
import dcclip.core.Classifier
import dcclip.core.Json
import dcclip.core.Manifest
import dcclip.core.Tokenizer
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The bundle's .pte encoders through the ExecuTorch Android library. Shapes and dtypes come from the
 * manifest, which is checked first: image [1,3,S,S] float32, text ids and mask [1,L] int64 (Android bundles).
 */
class ExecuTorchEncoders(
    private val manifest: Manifest,
    imageArtifact: Manifest.Artifact?,
    textArtifact: Manifest.Artifact?,
) : Classifier.Encoders, AutoCloseable {
    private val image: Module? = imageArtifact?.let { load(it, "image") }
    private val text: Module? = textArtifact?.let { load(it, "text") }
    private val textBuckets = textArtifact?.lengthBuckets

    private fun load(a: Manifest.Artifact, tower: String): Module {
        if (a.tower != tower || a.format != "pte") {
            throw BundleException("${a.file} is a ${a.tower} ${a.format} artifact; expected a $tower .pte")
        }
        val inputs = Json.arr(a.raw["inputs"], "${a.file} inputs").map { Json.obj(it, "${a.file} input") }
        val want = if (tower == "image") listOf("float32") else listOf("int64", "int64")
        val got = inputs.map { it["dtype"] }
        if (got != want) {
            throw BundleException("${a.file} takes inputs of dtype $got; this app feeds $want")
        }
        return Module.load(manifest.artifactFile(a).absolutePath) // the path rule: inside the bundle, listed
    }

    override fun encodeImage(pixelsChw: FloatArray): FloatArray {
        val m = image ?: throw IllegalStateException("no image encoder loaded")
        val s = manifest.imageSize.toLong()
        val x = Tensor.fromBlob(pixelsChw, longArrayOf(1, 3, s, s))
        return m.forward(EValue.from(x))[0].toTensor().dataAsFloatArray
    }

    override fun encodeText(encoding: Tokenizer.Encoding): FloatArray {
        val m = text ?: throw IllegalStateException("no text encoder loaded")
        // the shortest length bucket that holds the tokens: a short query runs a shorter graph
        val c = textBuckets!!.pick(encoding)
        val shape = longArrayOf(1, c.length.toLong())
        val ids = Tensor.fromBlob(c.inputIds, shape)
        val mask = Tensor.fromBlob(c.attentionMask, shape)
        return m.execute(c.method, EValue.from(ids), EValue.from(mask))[0].toTensor().dataAsFloatArray
    }

    override fun close() {
        image?.destroy()
        text?.destroy()
    }

    companion object {
        /** The manifest's default pair: what the classify screen loads. */
        fun defaults(manifest: Manifest) =
            ExecuTorchEncoders(manifest, manifest.defaultArtifact("image"), manifest.defaultArtifact("text"))

        /** For the benchmark: one tower of one artifact; null for what this runtime cannot run. */
        fun forArtifact(manifest: Manifest, a: Manifest.Artifact): ExecuTorchEncoders? {
            if (a.format != "pte" || a.backend != "xnnpack") return null // Core ML runs on Apple devices only
            return if (a.tower == "image") ExecuTorchEncoders(manifest, a, null) else ExecuTorchEncoders(manifest, null, a)
        }
    }
}
