package org.dcclip.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.ColorSpace
import android.graphics.Matrix
import android.net.Uri
import androidx.exifinterface.media.ExifInterface
import dcclip.core.Classifier
import java.io.File
import java.io.InputStream

/**
 * Decoding, the platform's half of preprocessing: 8-bit sRGB ARGB pixels with the EXIF orientation applied
 * (as Pillow's exif_transpose). Alpha, resize, crop and normalization are dcclip.core.ImagePreprocessor's.
 */
object Images {
    fun decode(resolver: ContentResolver, uri: Uri): Pair<Bitmap, Classifier.Pixels> =
        decode({ resolver.openInputStream(uri) ?: error("cannot open $uri") })

    fun decode(file: File): Classifier.Pixels = decode({ file.inputStream() }).second

    private fun decode(open: () -> InputStream): Pair<Bitmap, Classifier.Pixels> {
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPreferredColorSpace = ColorSpace.get(ColorSpace.Named.SRGB)
            inScaled = false
        }
        val decoded = open().use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IllegalArgumentException("not an image Android can decode")
        val orientation = open().use { ExifInterface(it) }
            .getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
        val bitmap = transpose(decoded, orientation)
        val pixels = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return bitmap to Classifier.Pixels(pixels, bitmap.width, bitmap.height)
    }

    /** The eight EXIF orientations as exact pixel permutations (no filtering). */
    private fun transpose(b: Bitmap, orientation: Int): Bitmap {
        val m = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> m.setScale(-1f, 1f)
            ExifInterface.ORIENTATION_ROTATE_180 -> m.setRotate(180f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> m.setScale(1f, -1f)
            ExifInterface.ORIENTATION_TRANSPOSE -> { m.setRotate(90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_90 -> m.setRotate(90f)
            ExifInterface.ORIENTATION_TRANSVERSE -> { m.setRotate(-90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_270 -> m.setRotate(-90f)
            else -> return b
        }
        return Bitmap.createBitmap(b, 0, 0, b.width, b.height, m, false)
    }
}
