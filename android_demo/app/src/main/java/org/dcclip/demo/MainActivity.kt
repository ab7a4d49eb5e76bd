package org.dcclip.demo

import android.graphics.Bitmap
import android.net.Uri
import android.os.Build
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.RadioGroup
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.core.content.FileProvider
import dcclip.core.Benchmark
import dcclip.core.Classifier
import dcclip.core.DeviceBenchmark
import java.io.File
import java.util.concurrent.Executors
import dcclip.core.Bundle as DcclipBundle

/**
 * One screen: pick or shoot a photo, classify it zero-shot against the bundle's labels in English or
 * Chinese, optionally rank a free-text query among them, see the top 5 with scores and latency. Two buttons
 * check the bundle against its golden.json and run the benchmark (also: `adb shell am start -n
 * org.dcclip.demo/.MainActivity --ez benchmark true`). All logic lives in dcclip.core; this is wiring.
 */
class MainActivity : AppCompatActivity() {
    private val worker = Executors.newSingleThreadExecutor()
    private var bundle: DcclipBundle? = null
    private var encoders: ExecuTorchEncoders? = null
    private var classifier: Classifier? = null
    private var pixels: Classifier.Pixels? = null
    private var cameraUri: Uri? = null

    private lateinit var info: TextView
    private lateinit var results: TextView
    private lateinit var image: ImageView
    private lateinit var query: EditText
    private lateinit var language: RadioGroup

    private val pickImage = registerForActivityResult(ActivityResultContracts.GetContent()) { uri ->
        uri?.let { showAndClassify(it) }
    }
    private val takePicture = registerForActivityResult(ActivityResultContracts.TakePicture()) { ok ->
        if (ok) cameraUri?.let { showAndClassify(it) }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        info = findViewById(R.id.bundle_info)
        results = findViewById(R.id.results)
        image = findViewById(R.id.image)
        query = findViewById(R.id.query)
        language = findViewById(R.id.language)

        findViewById<Button>(R.id.gallery).setOnClickListener { pickImage.launch("image/*") }
        findViewById<Button>(R.id.camera).setOnClickListener {
            val file = File(cacheDir, "camera/photo.jpg").apply { parentFile?.mkdirs() }
            cameraUri = FileProvider.getUriForFile(this, "$packageName.files", file)
            takePicture.launch(cameraUri!!)
        }
        findViewById<Button>(R.id.classify).setOnClickListener { classify() }
        language.setOnCheckedChangeListener { _, _ -> classify() }
        findViewById<Button>(R.id.self_test).setOnClickListener { selfTest() }
        findViewById<Button>(R.id.benchmark).setOnClickListener { benchmark() }

        info.text = "Loading and verifying the bundle…"
        background({
            val dir = BundleFiles.locate(this)
            val b = DcclipBundle.open(dir) // refuses an unknown format version or any sha256 mismatch
            val enc = ExecuTorchEncoders.defaults(b.manifest)
            bundle = b
            encoders = enc
            classifier = Classifier(b, enc)
            describe(b, dir)
        }) { text ->
            info.text = text
            if (intent.getBooleanExtra("benchmark", false)) benchmark()
        }
    }

    override fun onDestroy() {
        worker.shutdown()
        encoders?.close()
        super.onDestroy()
    }

    private fun describe(b: DcclipBundle, dir: File): String {
        val m = b.manifest
        val img = m.defaultArtifact("image")
        val txt = m.defaultArtifact("text")
        @Suppress("UNCHECKED_CAST")
        val gate = m.raw["parity_gate"] as? Map<String, Any?>
        return buildString {
            append("Bundle ${dir.path}\n")
            append("student ${(m.raw["student"] as? Map<*, *>)?.get("name")}, embed ${m.embedDim}, ")
            append("${b.classes?.labelsEn?.size ?: 0} labels, context ${m.contextLength} tokens\n")
            append("image ${img.file} (${img.sizeBytes / 1024} KB), text ${txt.file} (${txt.sizeBytes / 1024} KB)\n")
            append("parity gate at export: ${if (gate?.get("passed") == true) "passed" else "FAILED (overridden)"}")
        }
    }

    private fun lang() = if (language.checkedRadioButtonId == R.id.lang_zh) "zh" else "en"

    private fun showAndClassify(uri: Uri) {
        background({ Images.decode(contentResolver, uri) }) { (bitmap: Bitmap, px) ->
            image.setImageBitmap(bitmap)
            pixels = px
            classify()
        }
    }

    private fun classify() {
        val c = classifier ?: return
        val px = pixels ?: run { results.text = "Pick or take a photo first."; return }
        val lang = lang()
        val q = query.text.toString()
        background({ c.classify(px, lang, q, 5) }) { a ->
            results.text = buildString {
                a.top.forEachIndexed { i, s ->
                    append("%d. %-24s %6.2f%%  (logit %.2f)\n".format(i + 1, s.label, 100 * s.probability, s.logit))
                }
                append("\npreprocess %.1f ms, image encoder %.1f ms".format(a.preprocessMs, a.imageMs))
                if (a.textMs > 0) append(", query %.1f ms".format(a.textMs))
                append(", total %.1f ms".format(a.totalMs()))
            }
        }
    }

    private fun selfTest() {
        val c = classifier ?: return
        results.text = "Running golden.json through the app…"
        background({
            val p = c.goldenParity { Images.decode(it) }
            val img = Benchmark.parity(p.imageDevice, p.imageReference)
            val txt = Benchmark.parity(p.textDevice, p.textReference)
            "golden.json vs this phone (default artifacts)\n" +
                "image: cosine min %.5f mean %.5f over %d\n".format(img["cosine_min"], img["cosine_mean"], img["n"]) +
                "text:  cosine min %.5f mean %.5f over %d".format(txt["cosine_min"], txt["cosine_mean"], txt["n"])
        }) { results.text = it }
    }

    private fun benchmark() {
        val b = bundle ?: return
        results.text = "Benchmarking every .pte in the bundle (5 warm-up + 50 runs each)…"
        background({
            val opened = mutableListOf<ExecuTorchEncoders>()
            val entries = try {
                DeviceBenchmark.run(b, { a -> ExecuTorchEncoders.forArtifact(b.manifest, a)?.also { opened += it } },
                    { Images.decode(it) }, BundleFiles.evalImages(this), 5, 50, { peakRssBytes() })
            } finally {
                opened.forEach { it.close() }
            }
            val device = linkedMapOf<String, Any?>(
                "platform" to "android", "manufacturer" to Build.MANUFACTURER, "model" to Build.MODEL,
                "sdk_int" to Build.VERSION.SDK_INT.toLong(), "abi" to Build.SUPPORTED_ABIS.firstOrNull(),
                "runtime" to "executorch-android ${BuildConfig.EXECUTORCH_VERSION}", "batch" to 1L,
                "warmup" to 5L, "runs" to 50L, "bundle" to b.manifest.directory.path,
                "eval_images" to BundleFiles.evalImages(this).size.toLong(),
            )
            val out = File(getExternalFilesDir(null), "device_report.json")
            out.writeText(Benchmark.report(device, entries))
            buildString {
                entries.forEach { e ->
                    append("%-40s %8.2f ms (p90 %.2f)\n".format(e["name"], e["latency_ms_median"], e["latency_ms_p90"]))
                }
                append("\nwrote ${out.path}\nadb pull it, then: python -m lowering.report --bundle B --device-json device_report.json")
            }
        }) { results.text = it }
    }

    /** The process's peak resident memory (VmHWM), as lowering.report measures it on Linux. */
    private fun peakRssBytes(): Long? = try {
        File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") }
            ?.split(Regex("\\s+"))?.get(1)?.toLong()?.times(1024)
    } catch (e: Exception) {
        null
    }

    private fun <T> background(work: () -> T, done: (T) -> Unit) {
        worker.execute {
            val result = runCatching(work)
            runOnUiThread {
                result.onSuccess(done).onFailure { e -> results.text = "Error: ${e.message}" }
            }
        }
    }
}
