package org.dcclip.demo

import android.content.Context
import java.io.File

/**
 * Where the app finds its bundle (the directory `python -m lowering.export --target android` wrote):
 *  1. a device folder: <external files dir>/bundle, e.g. `adb push OUT/android /sdcard/Android/data/org.dcclip.demo/files/bundle`
 *  2. the APK's assets: app/src/main/assets/bundle/, copied once into the app's files dir (ExecuTorch loads
 *     a .pte from a file path).
 * Either way the bundle is then verified file by file against its manifest's sha256 table (dcclip.core.Manifest).
 */
object BundleFiles {
    const val ASSET_DIR = "bundle"

    fun locate(context: Context): File {
        val pushed = context.getExternalFilesDir(null)?.let { File(it, ASSET_DIR) }
        if (pushed != null && File(pushed, "manifest.json").isFile) return pushed
        val copied = File(context.filesDir, ASSET_DIR)
        val listed = context.assets.list(ASSET_DIR).orEmpty()
        if (listed.isEmpty()) {
            throw IllegalStateException(
                "no bundle: push one to ${pushed ?: "<external files dir>/bundle"} " +
                    "or put it in app/src/main/assets/bundle/ and rebuild (see android_demo/README.md)"
            )
        }
        // copy again whenever the APK's manifest differs from the copied one (a new bundle was built in)
        val apkManifest = context.assets.open("$ASSET_DIR/manifest.json").use { it.readBytes() }
        val copiedManifest = File(copied, "manifest.json")
        if (!copiedManifest.isFile || !copiedManifest.readBytes().contentEquals(apkManifest)) {
            copied.deleteRecursively()
            copyAssets(context, ASSET_DIR, copied)
        }
        return copied
    }

    private fun copyAssets(context: Context, path: String, to: File) {
        val children = context.assets.list(path).orEmpty()
        if (children.isEmpty()) { // a file
            to.parentFile?.mkdirs()
            context.assets.open(path).use { input -> to.outputStream().use { input.copyTo(it) } }
            return
        }
        to.mkdirs()
        for (child in children) copyAssets(context, "$path/$child", File(to, child))
    }

    /** Labeled images for the benchmark's accuracy: <external files dir>/eval/<class index>_<anything>.png|jpg. */
    fun evalImages(context: Context): List<dcclip.core.DeviceBenchmark.Labeled> {
        val dir = context.getExternalFilesDir(null)?.let { File(it, "eval") } ?: return emptyList()
        val pattern = Regex("""^(\d+)_.*\.(png|jpg|jpeg)$""", RegexOption.IGNORE_CASE)
        return dir.listFiles().orEmpty().sortedBy { it.name }.mapNotNull { f ->
            pattern.find(f.name)?.let { dcclip.core.DeviceBenchmark.Labeled(f, it.groupValues[1].toInt()) }
        }
    }
}
