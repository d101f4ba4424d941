(function(){
function val(td,num){var v=td.getAttribute('data-v');if(v===null)v=td.textContent;return num?parseFloat(v)||0:v;}
var tables=document.querySelectorAll('table.sortable');
for(var t=0;t<tables.length;t++){(function(table){
  var ths=table.tHead.rows[0].cells;
  for(var c=0;c<ths.length;c++){(function(th,col){
    th.addEventListener('click',function(){
      var num=th.className.indexOf('num')>=0, desc=!th.classList.contains('sorted-desc');
      for(var i=0;i<ths.length;i++)ths[i].classList.remove('sorted-asc','sorted-desc');
      th.classList.add(desc?'sorted-desc':'sorted-asc');
      var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=val(a.cells[col],num),y=val(b.cells[col],num);
        var r=num?x-y:String(x).localeCompare(String(y));return desc?-r:r;});
      for(var j=0;j<rows.length;j++)body.appendChild(rows[j]);
    });})(ths[c],c);}
})(tables[t]);}
var marks=document.querySelectorAll('[data-op]'), buttons=document.querySelectorAll('.legend button');
for(var b=0;b<buttons.length;b++){(function(btn){
  btn.addEventListener('click',function(){
    var op=btn.getAttribute('data-legend'), off=!btn.classList.contains('off');
    for(var k=0;k<buttons.length;k++)if(buttons[k].getAttribute('data-legend')===op)buttons[k].classList.toggle('off',off);
    for(var m=0;m<marks.length;m++)if(marks[m].getAttribute('data-op')===op)marks[m].classList.toggle('hidden',off);
  });})(buttons[b]);}
document.documentElement.setAttribute('data-report-ready','1');
})();
